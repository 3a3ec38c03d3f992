/* fed_train_step and fed_eval_batch. */
#include "core/train.h"

#include <math.h>

fed_loss_kind fed_loss_for_model(const fed_model *m) {
    return fed_arch_is_lm(fed_model_arch(m)) ? FED_LOSS_NEXT_TOKEN : FED_LOSS_SOFTMAX_CE;
}

static fed_err check_batch(const fed_model *m, const fed_batch *b, const fed_loss_config *loss) {
    size_t C = fed_model_output_size(m);
    if (b->n == 0) return fed_errorf(FED_EINVAL, "empty batch");
    if (loss->kind == FED_LOSS_NEXT_TOKEN) {
        /* The token ids are the forward's to check; the loss runs after it. */
        if (!fed_arch_is_lm(fed_model_arch(m)))
            return fed_errorf(FED_EINVAL, "the next-token loss needs a language model (an "
                                          "embedding first, an lmhead tied to it last)");
        if (loss->label_smoothing != 0.0f)
            return fed_errorf(FED_EINVAL, "label smoothing: not for a language model");
    } else if (loss->kind == FED_LOSS_SOFTMAX_CE) {
        if (!b->labels) return fed_errorf(FED_EINVAL, "cross-entropy needs integer labels");
        if (!(loss->label_smoothing >= 0.0f && loss->label_smoothing < 1.0f))
            return fed_errorf(FED_EINVAL, "label smoothing %g: must be in [0, 1)",
                              (double)loss->label_smoothing);
        for (size_t i = 0; i < b->n; i++) {
            if (b->labels[i] < 0 || (size_t)b->labels[i] >= C)
                return fed_errorf(FED_ERANGE, "example %zu: label %d outside [0, %zu)", i,
                                  (int)b->labels[i], C);
        }
    } else {
        if (!b->targets)
            return fed_errorf(FED_EINVAL, "%s loss needs float targets", fed_loss_name(loss->kind));
        for (size_t i = 0; i < b->n * C; i++) {
            float t = b->targets[i];
            if (!isfinite(t) || (loss->kind == FED_LOSS_BCE && (t < 0.0f || t > 1.0f)))
                return fed_errorf(FED_ERANGE, "example %zu: target %g %s", i / C, (double)t,
                                  loss->kind == FED_LOSS_BCE ? "outside [0, 1]" : "not finite");
        }
    }
    return FED_OK;
}

/* Loss of out against the batch; dout (may be NULL) receives its gradient. */
static void compute_loss(const fed_model *m, const fed_batch *b, const fed_loss_config *loss,
                         const float *out, float *dout, fed_step_stats *st) {
    size_t C = fed_model_output_size(m);
    st->correct = 0;
    st->count = b->n;
    switch (loss->kind) {
    case FED_LOSS_NEXT_TOKEN: {
        size_t T = fed_model_input_size(m);
        st->loss = fed_next_token_ce(dout, out, b->x, b->n, T, C / T, &st->count, &st->correct);
        break;
    }
    case FED_LOSS_SOFTMAX_CE:
        st->loss = fed_softmax_ce(dout, out, b->labels, b->n, C, loss->label_smoothing);
        st->correct = fed_count_correct(out, b->labels, b->n, C);
        break;
    case FED_LOSS_BCE:
        st->loss = fed_bce_logits(dout, out, b->targets, b->n * C);
        break;
    case FED_LOSS_MSE:
        st->loss = fed_mse(dout, out, b->targets, b->n * C);
        break;
    }
}

fed_err fed_train_step(fed_model *m, fed_optim *o, fed_arena *a, const fed_batch *b,
                       const fed_loss_config *loss, float lr, fed_rng *rng, fed_step_stats *stats) {
    fed_err err = check_batch(m, b, loss);
    if (err) return err;
    fed_arena_reset(a);
    fed_model_zero_grad(m);
    const float *out;
    if ((err = fed_model_forward(m, a, b->x, b->n, FED_MODE_TRAIN, rng, &out))) return err;
    /* The next-token loss writes its gradient over the logits, which backward does not
     * read (the lmhead needs only its input): (N, T, V) floats fewer. */
    float *dout = loss->kind == FED_LOSS_NEXT_TOKEN
                      ? (float *)out
                      : fed_arena_floats(a, b->n * fed_model_output_size(m));
    if (!dout) return FED_ENOMEM;
    compute_loss(m, b, loss, out, dout, stats);
    if ((err = fed_model_backward(m, a, dout))) return err;
    stats->grad_norm = fed_optim_step(o, m, lr);
    return FED_OK;
}

fed_err fed_eval_batch(fed_model *m, fed_arena *a, const fed_batch *b, const fed_loss_config *loss,
                       fed_step_stats *stats) {
    fed_err err = check_batch(m, b, loss);
    if (err) return err;
    fed_arena_reset(a);
    const float *out;
    if ((err = fed_model_forward(m, a, b->x, b->n, FED_MODE_EVAL, NULL, &out))) return err;
    compute_loss(m, b, loss, out, NULL, stats);
    stats->grad_norm = 0.0;
    return FED_OK;
}
