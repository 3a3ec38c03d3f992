/* Synthetic data generators (see synthetic.h). */
#include "dataset/synthetic.h"

#include <math.h>

void fed_synth_spirals(float *x, int32_t *labels, size_t n, size_t classes, float turns,
                       float noise, fed_rng *rng) {
    const double two_pi = 6.283185307179586;
    for (size_t i = 0; i < n; i++) {
        size_t c = i % classes;
        double r = 0.1 + 0.9 * (double)fed_rng_uniform(rng); /* arms meet at 0: keep off it */
        /* Arms start 2 pi / classes apart and wind `turns` times around the origin. */
        double theta = two_pi * ((double)c / (double)classes + (double)turns * r) +
                       (double)noise * (double)fed_rng_normal(rng);
        x[2 * i] = (float)(r * cos(theta));
        x[2 * i + 1] = (float)(r * sin(theta));
        labels[i] = (int32_t)c;
    }
}
