/* Internal to models/: what use_lite.c (tensors, vocabulary, metadata, the model) calls in
 * use_lite_graph.c (the checks of USE-lite's TF.js graph). */
#ifndef FED_MODELS_USE_LITE_INTERNAL_H
#define FED_MODELS_USE_LITE_INTERNAL_H

#include "core/err.h"
#include "models/tfjs.h"

#include <stdbool.h>

/* Checks every node and constant USE-lite's computation rests on (use_lite.h). used has
 * fed_tfjs_num_weights(g) entries: the constants it checked are set true. Errors are
 * FED_EFORMAT naming model.json and the node or constant. */
fed_err fed__use_lite_check_graph(const fed_tfjs *g, bool *used) FED_MUST_USE;

#endif
