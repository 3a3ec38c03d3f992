/* The streaming aggregator (update slots folded into a float sum at commit) and the
 * server strategies. Transport, digests, logging and checkpoint files live elsewhere. */
#include "coordinator/aggregate.h"
#include "core/alloc.h"
#include "core/blas.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* ---- the streaming aggregator ------------------------------------------------------- */

/* Handles: a sequence number (never reused) above the slot index. */
#define SLOT_BITS 8
#define SLOT_MASK ((1u << SLOT_BITS) - 1u)

/* The commit-time overflow guard keeps sum_k w_k ||d_k|| below this: every partial sum
 * |sum_k w_k d_k,i| is then finite, with room for rounding. */
#define SUM_LIMIT (0.5 * (double)FLT_MAX)

/* One update in flight. */
typedef struct slot {
    fed_agg_slot handle; /* of the open update; FED_AGG_NO_SLOT when free */
    double weight;       /* w_k */
    size_t filled;       /* values received so far (the next chunk's offset) */
    double sumsq;        /* sum of squares of those values */
    float *buf;          /* (n) the update's values */
} slot;

struct fed_agg {
    size_t n;                  /* floats per update */
    size_t nslots;             /* slots */
    float *mem;                /* the one block: sum, then each slot's buffer */
    float *sum;                /* (n) sum_k w_k d_k of accepted updates; the mean once closed */
    slot *slots;               /* (nslots) */
    uint64_t seq;              /* last handle sequence number given out */
    size_t open;               /* slots in use */
    size_t accepted;           /* updates folded into the sum this round */
    size_t rejected;           /* updates refused or aborted this round */
    double weight;             /* sum_k w_k of accepted updates */
    double wnorm;              /* sum_k w_k ||d_k||: bounds every |sum_i| (overflow guard) */
    double clip;               /* DP clipping bound of an update's norm (0: off) */
    size_t clipped;            /* updates scaled down to it this round */
    bool closed;               /* fed_agg_result was called */
    fed_agg_observer observer; /* per-update hook, or NULL */
    void *observer_user;
};

fed_err fed_agg_new(fed_agg **out, size_t n, size_t slots) {
    *out = NULL;
    if (n == 0) return fed_errorf(FED_EINVAL, "aggregator: update size 0");
    if (slots < 1 || slots > FED_AGG_MAX_SLOTS)
        return fed_errorf(FED_EINVAL, "aggregator: slots %zu: must be in [1, %d]", slots,
                          FED_AGG_MAX_SLOTS);
    /* Each buffer starts on a cache line: round the stride up to FED_ALIGN bytes. */
    const size_t per_line = FED_ALIGN / sizeof(float);
    size_t stride, total;
    if (!fed_add_ok(n, per_line - 1, &stride) ||
        !fed_mul_ok(stride - stride % per_line, slots + 1, &total))
        return fed_errorf(FED_ENOMEM, "aggregator: %zu x %zu floats overflow", n, slots + 1);
    stride -= stride % per_line;

    fed_err err = FED_ENOMEM;
    fed_agg *a = fed_calloc(1, sizeof *a);
    if (!a) goto fail;
    a->n = n;
    a->nslots = slots;
    if (!(a->slots = fed_calloc(slots, sizeof *a->slots))) goto fail;
    if (!(a->mem = fed_aligned_alloc(total, sizeof(float)))) goto fail;
    /* Touch every page now, not during the first round. */
    memset(a->mem, 0, total * sizeof(float));
    a->sum = a->mem;
    for (size_t i = 0; i < slots; i++) a->slots[i].buf = a->mem + (i + 1) * stride;
    *out = a;
    return FED_OK;
fail:
    fed_agg_destroy(&a);
    return err;
}

void fed_agg_destroy(fed_agg **a) {
    if (!a || !*a) return;
    fed_free((*a)->mem);
    fed_free((*a)->slots);
    fed_free(*a);
    *a = NULL;
}

size_t fed_agg_size(const fed_agg *a) {
    return a->n;
}

static void slot_free(fed_agg *a, slot *s) {
    s->handle = FED_AGG_NO_SLOT;
    a->open--;
}

void fed_agg_begin_round(fed_agg *a) {
    for (size_t i = 0; i < a->nslots; i++)
        if (a->slots[i].handle != FED_AGG_NO_SLOT) slot_free(a, &a->slots[i]);
    memset(a->sum, 0, a->n * sizeof(float));
    a->accepted = a->rejected = a->clipped = 0;
    a->weight = a->wnorm = 0.0;
    a->closed = false;
}

void fed_agg_set_clip(fed_agg *a, double clip) {
    a->clip = clip;
}

void fed_agg_set_observer(fed_agg *a, fed_agg_observer fn, void *user) {
    a->observer = fn;
    a->observer_user = user;
}

fed_err fed_agg_slot_open(fed_agg *a, fed_agg_slot *out, double w) {
    *out = FED_AGG_NO_SLOT;
    if (a->closed) return fed_errorf(FED_ECANCELED, "update refused: the round is closed");
    if (!(w > 0.0 && w <= FED_AGG_WEIGHT_MAX))
        return fed_errorf(FED_EINVAL, "update weight %g: must be in (0, 2^53]", w);
    if (a->open == a->nslots)
        return fed_errorf(FED_EAGAIN, "all %zu update slots are busy", a->nslots);
    size_t i = 0;
    while (a->slots[i].handle != FED_AGG_NO_SLOT) i++;
    slot *s = &a->slots[i];
    s->handle = (++a->seq << SLOT_BITS) | i;
    s->weight = w;
    s->filled = 0;
    s->sumsq = 0.0;
    a->open++;
    *out = s->handle;
    return FED_OK;
}

/* The open update with handle h, or NULL. */
static slot *find(fed_agg *a, fed_agg_slot h) {
    size_t i = (size_t)(h & SLOT_MASK);
    if (h == FED_AGG_NO_SLOT || i >= a->nslots || a->slots[i].handle != h) return NULL;
    return &a->slots[i];
}

static fed_err stale(fed_agg_slot h) {
    return fed_errorf(FED_ECANCELED, "update %llu is not open (closed, or its round ended)",
                      (unsigned long long)(h >> SLOT_BITS));
}

/* Frees s, counts a rejection and returns err (whose reason is already recorded). */
static fed_err reject(fed_agg *a, slot *s, fed_err err) {
    slot_free(a, s);
    a->rejected++;
    return err;
}

/* dst = src, returning sum src_i^2 in double. A single non-finite value makes the sum
 * non-finite, and finite values never do: |x| <= FLT_MAX gives x^2 < 1.2e77, and no
 * count of those reaches DBL_MAX. So the norm doubles as the finiteness check. Eight
 * independent accumulators let the compiler vectorize. */
static double copy_sumsq(float *restrict dst, const float *restrict src, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t k = 0; k < 8; k++) {
            float x = src[i + k];
            dst[i + k] = x;
            acc[k] += (double)x * (double)x;
        }
    }
    double s = 0.0;
    for (; i < n; i++) {
        dst[i] = src[i];
        s += (double)src[i] * (double)src[i];
    }
    for (size_t k = 0; k < 8; k++) s += acc[k];
    return s;
}

fed_err fed_agg_slot_write(fed_agg *a, fed_agg_slot h, size_t offset, const float *values,
                           size_t count) {
    slot *s = find(a, h);
    if (!s) return stale(h);
    if (offset != s->filled)
        return reject(a, s,
                      fed_errorf(FED_EFORMAT, "chunk at value %zu, expected %zu (out of order)",
                                 offset, s->filled));
    if (count > a->n - offset)
        return reject(a, s,
                      fed_errorf(FED_EFORMAT,
                                 "chunk of %zu values at %zu runs past the %zu-value update", count,
                                 offset, a->n));
    if (count == 0) return FED_OK;
    assert(values);
    double ss = copy_sumsq(s->buf + offset, values, count);
    if (!isfinite(ss)) {
        size_t i = 0;
        while (isfinite(values[i])) i++;
        return reject(a, s,
                      fed_errorf(FED_ENONFINITE, "value %zu is %s", offset + i,
                                 isnan(values[i]) ? "nan" : "infinite"));
    }
    s->filled += count;
    s->sumsq += ss;
    return FED_OK;
}

fed_err fed_agg_slot_commit(fed_agg *a, fed_agg_slot h, double max_norm) {
    slot *s = find(a, h);
    if (!s) return stale(h);
    if (!(max_norm >= 0.0))
        return reject(a, s,
                      fed_errorf(FED_EINVAL, "max_norm %g: must be >= 0 (0: no bound)", max_norm));
    if (s->filled != a->n)
        return reject(a, s,
                      fed_errorf(FED_EFORMAT, "update has %zu of %zu values", s->filled, a->n));
    double norm = sqrt(s->sumsq);
    if (max_norm > 0.0 && norm > max_norm)
        return reject(a, s,
                      fed_errorf(FED_ERANGE, "norm %.9g above the bound %.9g", norm, max_norm));
    double wn = s->weight * norm;
    if (!(a->wnorm + wn <= SUM_LIMIT))
        return reject(a, s,
                      fed_errorf(FED_ERANGE, "weight %g x norm %.9g would overflow the float sum",
                                 s->weight, norm));
    if (a->observer) {
        fed_err err = a->observer(a->observer_user, s->buf, a->n, s->weight, norm);
        if (err) return reject(a, s, err);
    }
    if (a->clip > 0.0 && norm > a->clip) {
        double f = a->clip / norm;
        wn *= f;
        fed_axpy(a->n, (float)(s->weight * f), s->buf, a->sum);
        a->clipped++;
    } else {
        fed_axpy(a->n, (float)s->weight, s->buf, a->sum);
    }
    a->wnorm += wn;
    a->weight += s->weight;
    a->accepted++;
    slot_free(a, s);
    return FED_OK;
}

fed_err fed_agg_slot_buffer(fed_agg *a, fed_agg_slot h, float **buf) {
    *buf = NULL;
    slot *s = find(a, h);
    if (!s) return stale(h);
    if (s->filled != 0)
        return fed_errorf(FED_EFORMAT, "update %llu already has %zu values written by chunks",
                          (unsigned long long)(h >> SLOT_BITS), s->filled);
    *buf = s->buf;
    return FED_OK;
}

/* sum x_i^2 in double, as copy_sumsq (non-finite iff some x_i is), without the copy. */
static double sumsq(const float *x, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    double s = 0.0;
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    for (size_t k = 0; k < 8; k++) s += acc[k];
    return s;
}

fed_err fed_agg_slot_commit_buffer(fed_agg *a, fed_agg_slot h, double max_norm) {
    slot *s = find(a, h);
    if (!s) return stale(h);
    if (s->filled != 0)
        return reject(a, s,
                      fed_errorf(FED_EFORMAT,
                                 "update has %zu values written by chunks; "
                                 "commit it with fed_agg_slot_commit",
                                 s->filled));
    double ss = sumsq(s->buf, a->n);
    if (!isfinite(ss)) {
        size_t i = 0;
        while (isfinite(s->buf[i])) i++;
        return reject(a, s,
                      fed_errorf(FED_ENONFINITE, "value %zu is %s", i,
                                 isnan(s->buf[i]) ? "nan" : "infinite"));
    }
    s->filled = a->n;
    s->sumsq = ss;
    return fed_agg_slot_commit(a, h, max_norm);
}

void fed_agg_slot_abort(fed_agg *a, fed_agg_slot h) {
    slot *s = find(a, h);
    if (s) (void)reject(a, s, FED_ECANCELED);
}

fed_err fed_agg_result(fed_agg *a, const float **mean) {
    *mean = NULL;
    if (!a->closed) {
        if (a->accepted == 0)
            return fed_errorf(FED_EINVAL, "no update accepted this round (%zu rejected)",
                              a->rejected);
        for (size_t i = 0; i < a->nslots; i++)
            if (a->slots[i].handle != FED_AGG_NO_SLOT) fed_agg_slot_abort(a, a->slots[i].handle);
        fed_scal(a->n, (float)(1.0 / a->weight), a->sum);
        a->closed = true;
    }
    *mean = a->sum;
    return FED_OK;
}

fed_err fed_agg_result_mut(fed_agg *a, float **mean) {
    const float *m = NULL;
    fed_err err = fed_agg_result(a, &m);
    *mean = err ? NULL : a->sum;
    return err;
}

const float *fed_agg_sum(const fed_agg *a) {
    return a->sum;
}

fed_agg_stats fed_agg_get_stats(const fed_agg *a) {
    fed_agg_stats st = {a->accepted, a->rejected, a->open, a->weight, a->clipped, a->closed};
    return st;
}

/* ---- server strategies ---------------------------------------------------------------- */

struct fed_strategy {
    fed_strategy_config cfg; /* hyperparameters */
    size_t n;                /* floats per vector */
    size_t nbufs;            /* state buffers in use: 0, 1 or 2 */
    float *m;                /* (n) FedAvgM momentum, or Adam/Yogi first moment; NULL if unused */
    float *v;                /* (n) Adam/Yogi second moment; NULL if unused */
    uint64_t rounds;         /* rounds stepped */
};

static const char *const strategy_names[] = {"fedavg", "fedavgm", "fedadam", "fedyogi"};
#define NUM_KINDS 4

const char *fed_strategy_name(fed_strategy_kind kind) {
    return (unsigned)kind < NUM_KINDS ? strategy_names[kind] : "?";
}

fed_err fed_strategy_parse(const char *name, fed_strategy_kind *kind) {
    for (int i = 0; i < NUM_KINDS; i++) {
        if (strcmp(name, strategy_names[i]) == 0) {
            *kind = (fed_strategy_kind)i;
            return FED_OK;
        }
    }
    return fed_errorf(FED_EINVAL, "strategy \"%.40s\": must be fedavg, fedavgm, fedadam or fedyogi",
                      name);
}

fed_strategy_config fed_strategy_defaults(fed_strategy_kind kind) {
    fed_strategy_config c = {0};
    c.kind = kind;
    bool adaptive = kind == FED_STRATEGY_FEDADAM || kind == FED_STRATEGY_FEDYOGI;
    c.eta = adaptive ? 0.01f : 1.0f;
    c.momentum = 0.9f;
    c.beta1 = 0.9f;
    c.beta2 = 0.99f;
    c.tau = 1e-3f;
    return c;
}

static bool is_adaptive(fed_strategy_kind k) {
    return k == FED_STRATEGY_FEDADAM || k == FED_STRATEGY_FEDYOGI;
}

fed_err fed_strategy_config_check(const fed_strategy_config *c) {
    if ((unsigned)c->kind >= NUM_KINDS) return fed_errorf(FED_EINVAL, "strategy: unknown kind");
    if (!(c->eta > 0.0f && isfinite(c->eta)))
        return fed_errorf(FED_EINVAL, "eta %g: must be finite and > 0", (double)c->eta);
    if (c->kind == FED_STRATEGY_FEDAVGM && !(c->momentum >= 0.0f && c->momentum < 1.0f))
        return fed_errorf(FED_EINVAL, "momentum %g: must be in [0, 1)", (double)c->momentum);
    if (is_adaptive(c->kind)) {
        if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
            return fed_errorf(FED_EINVAL, "beta1 %g: must be in [0, 1)", (double)c->beta1);
        if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
            return fed_errorf(FED_EINVAL, "beta2 %g: must be in [0, 1)", (double)c->beta2);
        if (!(c->tau > 0.0f && isfinite(c->tau)))
            return fed_errorf(FED_EINVAL, "tau %g: must be finite and > 0", (double)c->tau);
    }
    return FED_OK;
}

/* Fresh state: zero momentum and first moment, second moment tau^2. */
static void strategy_reset(fed_strategy *s) {
    if (s->m) memset(s->m, 0, s->n * sizeof(float));
    if (s->v) {
        float v0 = s->cfg.tau * s->cfg.tau;
        for (size_t i = 0; i < s->n; i++) s->v[i] = v0;
    }
    s->rounds = 0;
}

fed_err fed_strategy_new(fed_strategy **out, const fed_strategy_config *cfg, size_t n) {
    *out = NULL;
    fed_err err = fed_strategy_config_check(cfg);
    if (err) return err;
    if (n == 0) return fed_errorf(FED_EINVAL, "strategy: vector size 0");
    err = FED_ENOMEM;
    fed_strategy *s = fed_calloc(1, sizeof *s);
    if (!s) goto fail;
    s->cfg = *cfg;
    s->n = n;
    s->nbufs = cfg->kind == FED_STRATEGY_FEDAVG ? 0 : cfg->kind == FED_STRATEGY_FEDAVGM ? 1 : 2;
    if (s->nbufs >= 1 && !(s->m = fed_aligned_alloc(n, sizeof(float)))) goto fail;
    if (s->nbufs >= 2 && !(s->v = fed_aligned_alloc(n, sizeof(float)))) goto fail;
    strategy_reset(s);
    *out = s;
    return FED_OK;
fail:
    fed_strategy_destroy(&s);
    return err;
}

void fed_strategy_destroy(fed_strategy **s) {
    if (!s || !*s) return;
    fed_free((*s)->m);
    fed_free((*s)->v);
    fed_free(*s);
    *s = NULL;
}

/* v = mu*v + d; w += eta*v */
static void avgm_run(size_t n, float mu, float eta, float *restrict w, float *restrict v,
                     const float *restrict d) {
    for (size_t i = 0; i < n; i++) {
        v[i] = mu * v[i] + d[i];
        w[i] += eta * v[i];
    }
}

/* Adam (yogi false) or Yogi second moments, then w += eta*m/(sqrt(v)+tau). */
static void adaptive_run(size_t n, const fed_strategy_config *c, bool yogi, float *restrict w,
                         float *restrict m, float *restrict v, const float *restrict d) {
    const float b1 = c->beta1, b2 = c->beta2, a1 = 1.0f - c->beta1, a2 = 1.0f - c->beta2;
    const float eta = c->eta, tau = c->tau;
    for (size_t i = 0; i < n; i++) {
        float g = d[i], g2 = g * g;
        m[i] = b1 * m[i] + a1 * g;
        if (yogi) {
            float diff = v[i] - g2;
            float sign = (float)((diff > 0.0f) - (diff < 0.0f));
            v[i] = v[i] - a2 * g2 * sign;
        } else {
            v[i] = b2 * v[i] + a2 * g2;
        }
        w[i] += eta * m[i] / (sqrtf(v[i]) + tau);
    }
}

void fed_strategy_apply(fed_strategy *s, size_t offset, size_t count, float *w, const float *mean) {
    assert(offset <= s->n && count <= s->n - offset);
    const fed_strategy_config *c = &s->cfg;
    switch (c->kind) {
    case FED_STRATEGY_FEDAVG:
        fed_axpy(count, c->eta, mean, w);
        break;
    case FED_STRATEGY_FEDAVGM:
        avgm_run(count, c->momentum, c->eta, w, s->m + offset, mean);
        break;
    case FED_STRATEGY_FEDADAM:
    case FED_STRATEGY_FEDYOGI:
        adaptive_run(count, c, c->kind == FED_STRATEGY_FEDYOGI, w, s->m + offset, s->v + offset,
                     mean);
        break;
    }
}

void fed_strategy_apply_model(fed_strategy *s, fed_model *m, const float *mean) {
    float *w = fed_model_params(m);
    size_t off = 0, nt = fed_model_num_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        fed_strategy_apply(s, off, t->numel, w + t->offset, mean + off);
        off += t->numel;
    }
}

void fed_strategy_end_round(fed_strategy *s) {
    s->rounds++;
}

void fed_strategy_step(fed_strategy *s, float *w, const float *mean) {
    fed_strategy_apply(s, 0, s->n, w, mean);
    fed_strategy_end_round(s);
}

uint64_t fed_strategy_rounds(const fed_strategy *s) {
    return s->rounds;
}

/* Checkpoint name of state buffer b of a strategy with nbufs buffers, or NULL. */
static const char *buf_name(size_t nbufs, size_t b) {
    if (nbufs == 1 && b == 0) return "momentum";
    if (nbufs == 2) return b == 0 ? "m" : "v";
    return NULL;
}

void fed_strategy_state(const fed_strategy *s, fed_strategy_header *h,
                        const float *bufs[FED_STRATEGY_MAX_BUFS],
                        const char *names[FED_STRATEGY_MAX_BUFS]) {
    h->kind = (uint32_t)s->cfg.kind;
    h->nbufs = (uint32_t)s->nbufs;
    h->n = s->n;
    h->rounds = s->rounds;
    bufs[0] = s->m;
    bufs[1] = s->v;
    names[0] = buf_name(s->nbufs, 0);
    names[1] = buf_name(s->nbufs, 1);
}

fed_err fed_strategy_restore(fed_strategy *s, const fed_strategy_header *h,
                             const float *const bufs[]) {
    if (h->kind >= NUM_KINDS)
        return fed_errorf(FED_EFORMAT, "strategy state: unknown kind %u", (unsigned)h->kind);
    if (h->kind != (uint32_t)s->cfg.kind)
        return fed_errorf(FED_EINVAL, "strategy state is for %s, not %s", strategy_names[h->kind],
                          strategy_names[s->cfg.kind]);
    if (h->nbufs != s->nbufs)
        return fed_errorf(FED_EFORMAT, "strategy state: %u buffers, %s has %zu", (unsigned)h->nbufs,
                          strategy_names[h->kind], s->nbufs);
    if (h->n != s->n)
        return fed_errorf(FED_ESHAPE, "strategy state: %llu values per buffer, expected %zu",
                          (unsigned long long)h->n, s->n);
    for (size_t b = 0; b < s->nbufs; b++) {
        const float *x = bufs[b];
        /* As in copy_sumsq: the sum of squares is finite iff every value is. */
        if (!isfinite(fed_sumsq(s->n, x))) {
            size_t i = 0;
            while (isfinite(x[i])) i++;
            return fed_errorf(FED_ENONFINITE, "strategy state %s: value %zu is %s",
                              buf_name(s->nbufs, b), i, isnan(x[i]) ? "nan" : "infinite");
        }
        if (b == 1) {
            for (size_t i = 0; i < s->n; i++)
                if (x[i] < 0.0f)
                    return fed_errorf(FED_ERANGE, "strategy state v: value %zu is %g < 0", i,
                                      (double)x[i]);
        }
    }
    if (s->m) memcpy(s->m, bufs[0], s->n * sizeof(float));
    if (s->v) memcpy(s->v, bufs[1], s->n * sizeof(float));
    s->rounds = h->rounds;
    return FED_OK;
}
