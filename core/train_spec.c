/* The limits of a round's training configuration (core/train_spec.h). Kept apart from
 * fit.c so that the coordinator checks exactly what its sites will check (a site's
 * fed_train_spec_fit starts with this very check) without the training loop. */
#include "core/train_spec.h"
#include "core/optim.h"

static const char *opt_name(const fed_train_spec *s) {
    return s->optimizer && s->optimizer[0] ? s->optimizer : "sgd";
}

fed_err fed_train_spec_check(const fed_train_spec *s) {
    fed_opt_kind kind;
    if (fed_opt_parse(opt_name(s), &kind) != FED_OK)
        return fed_errorf(FED_EINVAL,
                          "config.optimizer \"%s\": must be one of " FED_TRAIN_OPTIMIZERS,
                          opt_name(s));
    if (s->epochs < 1 || s->epochs > FED_TRAIN_EPOCHS_MAX)
        return fed_errorf(FED_EINVAL, "config.epochs %u: must be in [1, %d]", (unsigned)s->epochs,
                          FED_TRAIN_EPOCHS_MAX);
    if (s->batch < 1 || s->batch > FED_TRAIN_BATCH_MAX)
        return fed_errorf(FED_EINVAL, "config.batch %u: must be in [1, %d]", (unsigned)s->batch,
                          FED_TRAIN_BATCH_MAX);
    if (!(s->lr > 0.0f && s->lr <= (float)FED_TRAIN_LR_MAX))
        return fed_errorf(FED_EINVAL, "config.lr %g: must be in (0, %g]", (double)s->lr,
                          FED_TRAIN_LR_MAX);
    if (!(s->momentum >= 0.0f && s->momentum <= (float)FED_TRAIN_MOMENTUM_MAX))
        return fed_errorf(FED_EINVAL, "config.momentum %g: must be in [0, %g]", (double)s->momentum,
                          FED_TRAIN_MOMENTUM_MAX);
    if (!(s->weight_decay >= 0.0f && s->weight_decay <= (float)FED_TRAIN_WEIGHT_DECAY_MAX))
        return fed_errorf(FED_EINVAL, "config.weight_decay %g: must be in [0, %g]",
                          (double)s->weight_decay, FED_TRAIN_WEIGHT_DECAY_MAX);
    if (!(s->clip_norm >= 0.0f && s->clip_norm <= (float)FED_TRAIN_CLIP_NORM_MAX))
        return fed_errorf(FED_EINVAL, "config.clip_norm %g: must be in [0, %g]",
                          (double)s->clip_norm, FED_TRAIN_CLIP_NORM_MAX);
    return FED_OK;
}
