/* SGD, Adam and AdamW over the trainable ranges of a flat buffer; schedules. */
#include "core/optim.h"
#include "core/alloc.h"
#include "core/blas.h"

#include <math.h>
#include <string.h>

/* One contiguous run of trainable parameters and where its state lives. */
typedef struct range {
    size_t offset; /* first parameter, in floats */
    size_t numel;  /* parameters in the run */
    size_t state;  /* first element of this run in each state buffer */
} range;

struct fed_optim {
    fed_optim_config cfg; /* hyperparameters */
    size_t nranges;       /* entries in ranges */
    range *ranges;        /* (nranges) trainable runs, adjacent tensors merged */
    size_t nstate;        /* floats per state buffer (sum of numel) */
    float *m;             /* (nstate) SGD momentum buffer or Adam first moment; NULL if unused */
    float *v;             /* (nstate) Adam second moment; NULL if unused */
    size_t t;             /* steps taken */
};

static const char *const opt_names[] = {"sgd", "adam", "adamw"};
static const char *const sched_names[] = {"constant", "step", "cosine"};

const char *fed_opt_name(fed_opt_kind kind) {
    return (unsigned)kind < 3 ? opt_names[kind] : "?";
}

fed_err fed_opt_parse(const char *name, fed_opt_kind *kind) {
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, opt_names[i]) == 0) {
            *kind = (fed_opt_kind)i;
            return FED_OK;
        }
    }
    return fed_errorf(FED_EINVAL, "optimizer \"%.40s\": must be sgd, adam or adamw", name);
}

fed_optim_config fed_optim_defaults(fed_opt_kind kind) {
    fed_optim_config c = {0};
    c.kind = kind;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.weight_decay = kind == FED_OPT_ADAMW ? 0.01f : 0.0f;
    c.decoupled_wd = kind == FED_OPT_ADAMW;
    return c;
}

fed_err fed_optim_config_check(const fed_optim_config *c) {
    if ((unsigned)c->kind > FED_OPT_ADAMW) return fed_errorf(FED_EINVAL, "optimizer: unknown kind");
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return fed_errorf(FED_EINVAL, "momentum %g: must be in [0, 1)", (double)c->momentum);
    if (c->nesterov && c->momentum == 0.0f)
        return fed_errorf(FED_EINVAL, "nesterov: needs momentum > 0");
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
        return fed_errorf(FED_EINVAL, "beta1 %g: must be in [0, 1)", (double)c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return fed_errorf(FED_EINVAL, "beta2 %g: must be in [0, 1)", (double)c->beta2);
    if (!(c->eps > 0.0f)) return fed_errorf(FED_EINVAL, "eps %g: must be > 0", (double)c->eps);
    if (!(c->weight_decay >= 0.0f && isfinite(c->weight_decay)))
        return fed_errorf(FED_EINVAL, "weight_decay %g: must be >= 0", (double)c->weight_decay);
    if (!(c->clip_norm >= 0.0f && isfinite(c->clip_norm)))
        return fed_errorf(FED_EINVAL, "clip_norm %g: must be >= 0", (double)c->clip_norm);
    return FED_OK;
}

fed_err fed_optim_new(fed_optim **out, const fed_model *m, const fed_optim_config *cfg) {
    *out = NULL;
    fed_err err = fed_optim_config_check(cfg);
    if (err) return err;
    err = FED_ENOMEM;
    fed_optim *o = fed_calloc(1, sizeof *o);
    if (!o) goto fail;
    o->cfg = *cfg;
    if (o->cfg.kind == FED_OPT_ADAMW) o->cfg.decoupled_wd = true;
    size_t nt = fed_model_num_tensors(m);
    o->ranges = fed_calloc(nt ? nt : 1, sizeof *o->ranges);
    if (!o->ranges) goto fail;
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable || t->numel == 0) continue;
        range *last = o->nranges ? &o->ranges[o->nranges - 1] : NULL;
        if (last && last->offset + last->numel == t->offset) {
            last->numel += t->numel;
        } else {
            o->ranges[o->nranges++] = (range){t->offset, t->numel, o->nstate};
        }
        o->nstate += t->numel;
    }
    bool need_m = cfg->kind != FED_OPT_SGD || cfg->momentum > 0.0f;
    bool need_v = cfg->kind != FED_OPT_SGD;
    if (need_m && !(o->m = fed_aligned_alloc(o->nstate, sizeof(float)))) goto fail;
    if (need_v && !(o->v = fed_aligned_alloc(o->nstate, sizeof(float)))) goto fail;
    fed_optim_reset(o);
    *out = o;
    return FED_OK;
fail:
    fed_optim_destroy(&o);
    return err;
}

void fed_optim_destroy(fed_optim **o) {
    if (!o || !*o) return;
    fed_free((*o)->ranges);
    fed_free((*o)->m);
    fed_free((*o)->v);
    fed_free(*o);
    *o = NULL;
}

void fed_optim_reset(fed_optim *o) {
    if (o->m) memset(o->m, 0, o->nstate * sizeof(float));
    if (o->v) memset(o->v, 0, o->nstate * sizeof(float));
    o->t = 0;
}

size_t fed_optim_state_size(const fed_optim *o) {
    return (o->m ? o->nstate : 0) + (o->v ? o->nstate : 0);
}

size_t fed_optim_steps(const fed_optim *o) {
    return o->t;
}

/* SGD as whole-vector BLAS passes (one saxpy in the plain case); the clipped gradient
 * buffer g may be modified (it is zeroed before the next step anyway). */
static void sgd_run(const fed_optim_config *c, float *w, float *g, float *buf, size_t n, float lr) {
    const float mu = c->momentum, wd = c->weight_decay;
    if (wd > 0.0f && !c->decoupled_wd) fed_axpy(n, wd, w, g); /* L2: g += wd * w */
    if (wd > 0.0f && c->decoupled_wd) fed_scal(n, 1.0f - lr * wd, w);
    if (!buf) {
        fed_axpy(n, -lr, g, w);
        return;
    }
    fed_scal(n, mu, buf); /* buf = mu * buf + g */
    fed_axpy(n, 1.0f, g, buf);
    if (c->nesterov) { /* w -= lr * (g + mu * buf) */
        fed_axpy(n, -lr, g, w);
        fed_axpy(n, -lr * mu, buf, w);
    } else {
        fed_axpy(n, -lr, buf, w);
    }
}

static void adam_run(const fed_optim_config *c, float *w, float *g, float *m, float *v, size_t n,
                     float lr, float bc1, float bc2) {
    const float b1 = c->beta1, b2 = c->beta2, wd = c->weight_decay, eps = c->eps;
    const bool l2 = wd > 0.0f && !c->decoupled_wd, dec = wd > 0.0f && c->decoupled_wd;
    const float step = lr / bc1, rbc2 = 1.0f / sqrtf(bc2);
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        if (l2) gi += wd * w[i];
        if (dec) w[i] -= lr * wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
    }
}

double fed_optim_step(fed_optim *o, fed_model *m, float lr) {
    float *w = fed_model_params(m), *g = fed_model_grads(m);
    /* The norm costs a pass over every gradient (a sixth of a 2NN step at batch 10):
     * only clipping needs it. */
    double norm = (double)NAN;
    if (o->cfg.clip_norm > 0.0f) {
        double sq = 0.0;
        for (size_t r = 0; r < o->nranges; r++)
            sq += fed_sumsq(o->ranges[r].numel, g + o->ranges[r].offset);
        norm = sqrt(sq);
    }
    if (o->cfg.clip_norm > 0.0f && norm > (double)o->cfg.clip_norm) {
        float coef = (float)((double)o->cfg.clip_norm / (norm + 1e-6));
        for (size_t r = 0; r < o->nranges; r++)
            fed_scal(o->ranges[r].numel, coef, g + o->ranges[r].offset);
    }
    o->t++;
    float bc1 = 1.0f - powf(o->cfg.beta1, (float)o->t);
    float bc2 = 1.0f - powf(o->cfg.beta2, (float)o->t);
    for (size_t r = 0; r < o->nranges; r++) {
        const range *R = &o->ranges[r];
        float *wr = w + R->offset, *gr = g + R->offset;
        if (o->cfg.kind == FED_OPT_SGD)
            sgd_run(&o->cfg, wr, gr, o->m ? o->m + R->state : NULL, R->numel, lr);
        else
            adam_run(&o->cfg, wr, gr, o->m + R->state, o->v + R->state, R->numel, lr, bc1, bc2);
    }
    return norm;
}

/* ---- schedules -------------------------------------------------------------------- */

fed_schedule fed_schedule_constant(float lr) {
    fed_schedule s = {0};
    s.kind = FED_SCHED_CONSTANT;
    s.lr = lr;
    s.step_size = 1;
    s.gamma = 1.0f;
    s.total = 1;
    return s;
}

float fed_schedule_lr(const fed_schedule *s, size_t t) {
    if (t < s->warmup) return s->lr * (float)(t + 1) / (float)s->warmup;
    t -= s->warmup;
    switch (s->kind) {
    case FED_SCHED_CONSTANT:
        return s->lr;
    case FED_SCHED_STEP:
        return s->lr * powf(s->gamma, (float)(t / s->step_size));
    case FED_SCHED_COSINE: {
        double frac = t >= s->total ? 1.0 : (double)t / (double)s->total;
        return (float)((double)s->min_lr + (double)(s->lr - s->min_lr) * 0.5 *
                                               (1.0 + cos(3.14159265358979323846 * frac)));
    }
    }
    return s->lr;
}

fed_err fed_schedule_check(const fed_schedule *s) {
    if ((unsigned)s->kind > FED_SCHED_COSINE)
        return fed_errorf(FED_EINVAL, "schedule: unknown kind");
    if (!(s->lr > 0.0f && isfinite(s->lr)))
        return fed_errorf(FED_EINVAL, "lr %g: must be a positive number", (double)s->lr);
    if (s->kind == FED_SCHED_STEP && s->step_size == 0)
        return fed_errorf(FED_EINVAL, "step_size: must be >= 1");
    if (s->kind == FED_SCHED_STEP && !(s->gamma > 0.0f && s->gamma <= 1.0f))
        return fed_errorf(FED_EINVAL, "gamma %g: must be in (0, 1]", (double)s->gamma);
    if (s->kind == FED_SCHED_COSINE && s->total == 0)
        return fed_errorf(FED_EINVAL, "cosine schedule: total steps must be >= 1");
    if (s->kind == FED_SCHED_COSINE && !(s->min_lr >= 0.0f && s->min_lr <= s->lr))
        return fed_errorf(FED_EINVAL, "min_lr %g: must be in [0, lr]", (double)s->min_lr);
    return FED_OK;
}

const char *fed_sched_name(fed_sched_kind kind) {
    return (unsigned)kind < 3 ? sched_names[kind] : "?";
}

fed_err fed_sched_parse(const char *name, fed_sched_kind *kind) {
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, sched_names[i]) == 0) {
            *kind = (fed_sched_kind)i;
            return FED_OK;
        }
    }
    return fed_errorf(FED_EINVAL, "schedule \"%.40s\": must be constant, step or cosine", name);
}
