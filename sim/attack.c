/* The backdoor's data poisoning (sim/attack.h): the trigger, a malicious site's poisoned
 * share and the triggered test set, all made with fed_data_subset (copies of rows; of a
 * byte set made floats) and then changed in place. */
#include "sim/attack.h"

#include "core/alloc.h"
#include "core/rng.h"

#include <math.h>
#include <string.h>

fed_err fed_sim_trigger_make(fed_sim_trigger *t, const fed_dataset *train) {
    memset(t, 0, sizeof *t);
    if (!train || train->n == 0 || train->dim == 0)
        return fed_errorf(FED_EINVAL, "backdoor: no training data to place a trigger in");
    const fed_shape *s = &train->shape;
    const size_t dim = train->dim;
    if (s->ndim == 3 && s->d[1] >= 3 && s->d[2] >= 3) {
        const size_t C = s->d[0], H = s->d[1], W = s->d[2];
        if (9 * C > FED_SIM_TRIGGER_MAX)
            return fed_errorf(FED_EINVAL,
                              "backdoor: images of %zu channels (the trigger covers "
                              "at most 16)",
                              C);
        float *buf = fed_mallocarray(dim, sizeof(float)); /* rows of a byte set */
        if (!buf) return FED_ENOMEM;
        float top = fed_data_row(train, 0, buf)[0];
        for (size_t i = 0; i < train->n; i++) {
            const float *x = fed_data_row(train, i, buf);
            for (size_t j = 0; j < dim; j++)
                if (x[j] > top) top = x[j];
        }
        fed_free(buf);
        for (size_t c = 0; c < C; c++)
            for (size_t r = H - 3; r < H; r++)
                for (size_t q = W - 3; q < W; q++) {
                    t->at[t->n] = (c * H + r) * W + q;
                    t->value[t->n++] = top;
                }
        return FED_OK;
    }
    float *buf = fed_mallocarray(dim, sizeof(float)); /* rows of a byte set */
    if (!buf) return FED_ENOMEM;
    for (size_t j = dim > 3 ? dim - 3 : 0; j < dim; j++) {
        float lo = fed_data_row(train, 0, buf)[j], hi = lo;
        for (size_t i = 1; i < train->n; i++) {
            float v = fed_data_row(train, i, buf)[j];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        t->at[t->n] = j;
        t->value[t->n++] = hi + (hi > lo ? hi - lo : 1.0f);
    }
    fed_free(buf);
    return FED_OK;
}

void fed_sim_trigger_apply(const fed_sim_trigger *t, float *x) {
    for (size_t k = 0; k < t->n; k++) x[t->at[k]] = t->value[k];
}

fed_err fed_sim_backdoor_poison(fed_dataset **out, const fed_dataset *d, const fed_sim_trigger *t,
                                int32_t label, uint64_t seed) {
    *out = NULL;
    if (label < 0 || (size_t)label >= d->num_classes)
        return fed_errorf(FED_EINVAL, "backdoor: label %d is not below the %zu classes", (int)label,
                          d->num_classes);
    const size_t n = d->n, k = (size_t)llround(FED_SIM_BACKDOOR_SHARE * (double)n);
    /* idx: the n rows, then a shuffle of them whose first k are copied (k <= n). */
    size_t *idx = fed_mallocarray(2 * n + 1, sizeof *idx);
    if (!idx) return FED_ENOMEM;
    for (size_t i = 0; i < n; i++) idx[i] = idx[n + i] = i;
    fed_rng r;
    fed_rng_seed(&r, seed);
    fed_rng_shuffle(&r, idx + n, n);
    fed_err err = fed_data_subset(out, d, idx, n + k);
    fed_free(idx);
    if (err) return err;
    if ((err = fed_data_densify(*out))) { /* the triggered copies are floats */
        fed_data_destroy(out);
        return err;
    }
    for (size_t i = n; i < n + k; i++) {
        fed_sim_trigger_apply(t, (*out)->x + i * d->dim);
        (*out)->y[i] = label;
    }
    return FED_OK;
}

fed_err fed_sim_backdoor_testset(fed_dataset **out, const fed_dataset *test,
                                 const fed_sim_trigger *t, int32_t label) {
    *out = NULL;
    if (label < 0 || (size_t)label >= test->num_classes)
        return fed_errorf(FED_EINVAL, "backdoor: label %d is not below the %zu classes", (int)label,
                          test->num_classes);
    size_t *idx = fed_mallocarray(test->n + 1, sizeof *idx), k = 0;
    if (!idx) return FED_ENOMEM;
    for (size_t i = 0; i < test->n; i++)
        if (test->y[i] != label) idx[k++] = i;
    fed_err err = k ? fed_data_subset(out, test, idx, k)
                    : fed_errorf(FED_EINVAL,
                                 "backdoor: the test set has no example of a label "
                                 "other than %d",
                                 (int)label);
    fed_free(idx);
    if (!err && (err = fed_data_densify(*out))) fed_data_destroy(out);
    if (err) return err;
    for (size_t i = 0; i < k; i++) {
        fed_sim_trigger_apply(t, (*out)->x + i * test->dim);
        (*out)->y[i] = label;
    }
    return FED_OK;
}
