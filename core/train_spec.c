/* The limits of a round's training configuration and its translation into fed_fit's
 * configuration (core/train_spec.h). Kept apart from fit.c so that the coordinator
 * checks exactly what its sites will check. */
#include "core/train_spec.h"
#include "core/fit.h"
#include "core/optim.h"

#include <string.h>

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

fed_err fed_train_spec_fit(const fed_train_spec *s, uint64_t round, size_t max_epochs,
                           size_t max_batch, fed_fit_config *out) {
    fed_err err = fed_train_spec_check(s);
    if (err) return err;
    fed_opt_kind kind;
    if ((err = fed_opt_parse(opt_name(s), &kind))) return err; /* checked above */
    fed_fit_config f = fed_fit_defaults();
    f.optim = fed_optim_defaults(kind);
    if (kind == FED_OPT_SGD) f.optim.momentum = s->momentum;
    f.optim.weight_decay = s->weight_decay;
    f.optim.clip_norm = s->clip_norm;
    if ((err = fed_optim_config_check(&f.optim))) return fed_errprefix(err, "config");
    f.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, s->lr);
    f.epochs = s->epochs;
    if (max_epochs && f.epochs > max_epochs) f.epochs = max_epochs;
    f.batch = s->batch;
    if (max_batch && f.batch > max_batch) f.batch = max_batch;
    f.loss.kind = FED_LOSS_SOFTMAX_CE;
    f.loss.label_smoothing = 0.0f;
    f.patience = 0;
    f.min_delta = 0.0;
    f.restore_best = false;
    memset(&f.augment, 0, sizeof f.augment);
    f.seed = s->seed + round;
    f.max_steps = s->max_steps > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)s->max_steps;
    f.on_epoch = NULL;
    f.on_step = NULL;
    f.user = NULL;
    *out = f;
    return FED_OK;
}
