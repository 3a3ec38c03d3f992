/* Optimizers over a model's flat buffers, and learning-rate schedules.
 *
 * The update rules are PyTorch's, so hyperparameters transfer one to one:
 *   SGD     buf = mu*buf + g;  g' = nesterov ? g + mu*buf : buf;  w -= lr*g'
 *   Adam    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *           w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *   AdamW   as Adam, after the decoupled decay w -= lr*wd*w
 * Weight decay for SGD and Adam is the classic L2 term (g += wd*w) unless
 * decoupled_wd is set (then w -= lr*wd*w, as AdamW and SGDW).
 *
 * Only tensors that were trainable when the optimizer was made are updated, and only
 * they own state: a frozen tensor costs no memory and is never touched. Gradient
 * clipping (global L2 norm, as torch.nn.utils.clip_grad_norm_) runs inside the step. */
#ifndef FED_OPTIM_H
#define FED_OPTIM_H

#include "core/err.h"
#include "core/model.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum fed_opt_kind {
    FED_OPT_SGD,
    FED_OPT_ADAM,
    FED_OPT_ADAMW,
} fed_opt_kind;

typedef struct fed_optim_config {
    fed_opt_kind kind;  /* update rule */
    float momentum;     /* SGD: momentum mu in [0, 1) (0 = plain SGD) */
    bool nesterov;      /* SGD: Nesterov momentum (needs momentum > 0) */
    float beta1, beta2; /* Adam(W): moment decay rates in [0, 1) */
    float eps;          /* Adam(W): denominator guard, > 0 */
    float weight_decay; /* >= 0; L2 or decoupled, see decoupled_wd */
    bool decoupled_wd;  /* SGD/Adam: decay weights directly (always on for AdamW) */
    float clip_norm;    /* clip the global gradient norm to this; 0 = off */
} fed_optim_config;

/* PyTorch's defaults for kind: momentum 0, betas (0.9, 0.999), eps 1e-8, weight decay
 * 0 (0.01 for AdamW), no clipping. */
fed_optim_config fed_optim_defaults(fed_opt_kind kind);
/* Checks ranges; FED_EINVAL with the field named. */
fed_err fed_optim_config_check(const fed_optim_config *cfg) FED_MUST_USE;
/* "sgd", "adam", "adamw"; and back (FED_EINVAL for an unknown name). */
const char *fed_opt_name(fed_opt_kind kind);
fed_err fed_opt_parse(const char *name, fed_opt_kind *kind) FED_MUST_USE;

typedef struct fed_optim fed_optim;

/* An optimizer for the tensors of m that are trainable now, with zeroed state. */
fed_err fed_optim_new(fed_optim **out, const fed_model *m,
                      const fed_optim_config *cfg) FED_MUST_USE;
/* NULL-safe; sets *o to NULL. */
void fed_optim_destroy(fed_optim **o);
/* One update of m's parameters from m's gradients with learning rate lr. Returns the
 * global gradient norm before clipping when clip_norm > 0, NaN otherwise (not computed:
 * it costs a pass over the gradients). The model must be the one (or one of the same
 * layout as the one) the optimizer was made for. */
double fed_optim_step(fed_optim *o, fed_model *m, float lr);
/* Forgets momentum and moments, and the step count. */
void fed_optim_reset(fed_optim *o);
/* Floats of state held (0 for plain SGD). */
size_t fed_optim_state_size(const fed_optim *o);
/* Steps taken since creation or reset. */
size_t fed_optim_steps(const fed_optim *o);

/* ---- learning-rate schedules ------------------------------------------------------ */

typedef enum fed_sched_kind {
    FED_SCHED_CONSTANT, /* lr */
    FED_SCHED_STEP,     /* lr * gamma^floor(t / step_size) */
    FED_SCHED_COSINE,   /* min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2 */
} fed_sched_kind;

typedef struct fed_schedule {
    fed_sched_kind kind; /* shape after warm-up */
    float lr;            /* base learning rate, > 0 */
    size_t warmup;       /* linear warm-up steps from lr/warmup to lr (0 = none) */
    size_t step_size;    /* STEP: steps between decays, >= 1 */
    float gamma;         /* STEP: decay factor in (0, 1] */
    size_t total;        /* COSINE: steps after warm-up over which to decay, >= 1 */
    float min_lr;        /* COSINE: floor, in [0, lr] */
} fed_schedule;

/* A constant schedule at lr. */
fed_schedule fed_schedule_constant(float lr);
/* Learning rate for step t (0-based). Warm-up steps count from 0; the decay clock t
 * starts after them. */
float fed_schedule_lr(const fed_schedule *s, size_t t);
fed_err fed_schedule_check(const fed_schedule *s) FED_MUST_USE;
/* "constant", "step", "cosine"; and back. */
const char *fed_sched_name(fed_sched_kind kind);
fed_err fed_sched_parse(const char *name, fed_sched_kind *kind) FED_MUST_USE;

#endif
