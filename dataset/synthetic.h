/* Built-in synthetic labeled data for demos and tests, so the core can be exercised
 * with no data files at all. Real data sets are loaded by dataset.h. */
#ifndef FED_SYNTHETIC_H
#define FED_SYNTHETIC_H

#include "core/rng.h"

#include <stddef.h>
#include <stdint.h>

/* n points on `classes` interleaved spiral arms in 2-D (the classic toy set of
 * CS231n): example i has class i % classes, radius r ~ U(0.1, 1) and angle
 * 2 pi (class / classes + turns * r) plus Gaussian noise of std `noise` (radians).
 * Not linearly separable; more turns and more noise make it harder. */
void fed_synth_spirals(float *x,        /* (n, 2) */
                       int32_t *labels, /* (n) */
                       size_t n, size_t classes, float turns, float noise, fed_rng *rng);

#endif
