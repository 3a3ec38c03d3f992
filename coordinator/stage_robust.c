/* The robust rules (coordinator.h, fed_robust_rule): a stage after the decode that replaces
 * the round's weighted mean with the rule's aggregate. Its update() hook spills each
 * accepted update to disk (spill.h); at the close the rule reads them back a block of
 * coordinates at a time, so RAM holds the model, the mean and one block (16 MiB). */
#include "coordinator/internal.h"
#include "coordinator/spill.h"
#include "core/blas.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>

static const char *const rule_names[] = {"mean",       "median", "trimmed-mean", "krum",
                                         "multi-krum", "norm",   "rfa"};
#define NRULES (sizeof rule_names / sizeof rule_names[0])

const char *fed_robust_name(fed_robust_rule rule) {
    return (size_t)rule < NRULES ? rule_names[rule] : "?";
}

fed_err fed_robust_parse(const char *name, fed_robust_rule *rule) {
    for (size_t i = 0; i < NRULES; i++)
        if (strcmp(name, rule_names[i]) == 0) {
            *rule = (fed_robust_rule)i;
            return FED_OK;
        }
    return fed_errorf(FED_EINVAL,
                      "aggregation '%s': must be mean, median, trimmed-mean, krum, multi-krum, "
                      "norm or rfa",
                      name);
}

size_t fed_robust_min_fit(const fed_coord_robust_config *cfg) {
    size_t f = cfg->byzantine;
    switch (cfg->rule) {
    case FED_ROBUST_KRUM:
    case FED_ROBUST_MULTI_KRUM:
        return 2 * f + 3; /* n > 2f + 2 */
    case FED_ROBUST_TRIMMED_MEAN:
        if (cfg->trim > 0 && f > 0) { /* floor(trim m) >= f */
            size_t m = (size_t)ceil((double)f / cfg->trim - 1e-9);
            while ((size_t)floor(cfg->trim * (double)m) < f) m++;
            return m > 2 * f + 1 ? m : 2 * f + 1;
        }
        return 2 * f + 1;
    case FED_ROBUST_MEDIAN:
    case FED_ROBUST_RFA:
        return 2 * f + 1; /* a majority of good updates */
    case FED_ROBUST_MEAN:
    case FED_ROBUST_NORM:
        break;
    }
    return 1;
}

/* Weiszfeld: at most this many iterations, ending sooner once the step is below this
 * share of the estimate's norm. */
#define RFA_ITERS 16
#define RFA_TOL   1e-6

typedef struct robust_stage {
    fed_stage base;
    fed_coord_robust_config cfg;
    fed_spill *sp;
    float *blk;    /* rows x block of a gather */
    size_t blk_n;  /* floats blk holds */
    float *z;      /* RFA: the next estimate (n) */
    double *dist;  /* rows x rows (Krum: Gram, then distances) or rows (RFA, norm) */
    size_t dist_n; /* doubles dist holds */
    float *col;    /* one coordinate's values across rows */
    size_t col_n;
} robust_stage;

/* Makes *p hold at least want elements of size sz. */
static fed_err reserve(void **p, size_t *have, size_t want, size_t sz) {
    if (*have >= want) return FED_OK;
    void *q = fed_mallocarray(want, sz);
    if (!q) return FED_ENOMEM;
    fed_free(*p);
    *p = q;
    *have = want;
    return FED_OK;
}

static fed_err robust_update(fed_stage *s, const float *d, size_t n, double w, double norm) {
    (void)n;
    return fed_spill_add(((robust_stage *)s)->sp, d, w, norm);
}

static void robust_begin(fed_stage *s) {
    fed_spill_reset(((robust_stage *)s)->sp);
}

static void robust_destroy(fed_stage *s) {
    robust_stage *t = (robust_stage *)s;
    fed_spill_destroy(&t->sp);
    fed_free(t->blk);
    fed_free(t->z);
    fed_free(t->dist);
    fed_free(t->col);
}

/* ---- order statistics -------------------------------------------------------------- */

static void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

/* Rearranges a[0..m) so that a[k] is the value sorted order puts there, nothing greater
 * before it and nothing smaller after it (Hoare's select, median-of-three pivots). */
static void select_k(float *a, size_t m, size_t k) {
    size_t lo = 0, hi = m - 1;
    while (hi > lo) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swapf(&a[mid], &a[lo]);
        if (a[hi] < a[lo]) swapf(&a[hi], &a[lo]);
        if (a[hi] < a[mid]) swapf(&a[hi], &a[mid]);
        float p = a[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) {
                swapf(&a[i], &a[j]);
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* The median of a[0..m) (m >= 1; the mean of the two middle values for even m). */
static float median_of(float *a, size_t m) {
    size_t k = m / 2;
    select_k(a, m, k);
    if (m % 2) return a[k];
    float lo = a[0];
    for (size_t i = 1; i < k; i++)
        if (a[i] > lo) lo = a[i];
    return (float)(0.5 * ((double)lo + (double)a[k]));
}

/* The mean of a[0..m) without its b smallest and b largest values (m > 2b). */
static float trimmed_of(float *a, size_t m, size_t b) {
    if (b > 0) {
        select_k(a, m, b);
        select_k(a + b + 1, m - b - 1, m - 2 * b - 2);
    }
    double s = 0.0;
    for (size_t i = b; i < m - b; i++) s += (double)a[i];
    return (float)(s / (double)(m - 2 * b));
}

/* ---- the rules ---------------------------------------------------------------------- */

/* The values to cut at each end for a trimmed mean of m updates. */
static size_t trim_count(const fed_coord_robust_config *cfg, size_t m) {
    size_t b = cfg->trim > 0 ? (size_t)floor(cfg->trim * (double)m) : cfg->byzantine;
    return 2 * b < m ? b : (m - 1) / 2;
}

/* Median or trimmed mean, coordinate by coordinate, into out. */
static fed_err per_coordinate(robust_stage *t, float *out) {
    size_t m = fed_spill_rows(t->sp), n = fed_spill_size(t->sp), bl = fed_spill_block(t->sp);
    size_t b = trim_count(&t->cfg, m);
    fed_err err = reserve((void **)&t->blk, &t->blk_n, m * bl, sizeof(float));
    if (!err) err = reserve((void **)&t->col, &t->col_n, m, sizeof(float));
    if (err) return err;
    for (size_t off = 0; off < n; off += bl) {
        size_t cnt = n - off < bl ? n - off : bl;
        fed_spill_gather(t->sp, off, cnt, t->blk);
        for (size_t j = 0; j < cnt; j++) {
            for (size_t i = 0; i < m; i++) t->col[i] = t->blk[i * cnt + j];
            out[off + j] =
                t->cfg.rule == FED_ROBUST_MEDIAN ? median_of(t->col, m) : trimmed_of(t->col, m, b);
        }
    }
    return FED_OK;
}

/* out = sum_i c[i] x_i over the spilled rows (c[i] == 0 skips row i). */
static void combine(robust_stage *t, const double *c, float *out) {
    size_t m = fed_spill_rows(t->sp), n = fed_spill_size(t->sp), bl = fed_spill_block(t->sp);
    for (size_t off = 0; off < n; off += bl) {
        size_t cnt = n - off < bl ? n - off : bl;
        fed_spill_gather(t->sp, off, cnt, t->blk);
        memset(out + off, 0, cnt * sizeof(float));
        for (size_t i = 0; i < m; i++)
            if (c[i] != 0.0) fed_axpy(cnt, (float)c[i], t->blk + i * cnt, out + off);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Krum's scores: score[i] = the sum of the k smallest squared distances from x_i to the
 * others. The Gram matrix is summed a block at a time (sgemm), in double across blocks. */
static fed_err krum_scores(robust_stage *t, size_t k, double *score) {
    size_t m = fed_spill_rows(t->sp), n = fed_spill_size(t->sp), bl = fed_spill_block(t->sp);
    double *g = t->dist;
    float *gb = t->col; /* m x m float Gram of one block */
    memset(g, 0, m * m * sizeof *g);
    for (size_t off = 0; off < n; off += bl) {
        size_t cnt = n - off < bl ? n - off : bl;
        fed_spill_gather(t->sp, off, cnt, t->blk);
        fed_gemm(false, true, m, m, cnt, 1.0f, t->blk, cnt, t->blk, cnt, 0.0f, gb, m);
        for (size_t i = 0; i < m * m; i++) g[i] += (double)gb[i];
    }
    double *row = g + m * m; /* m more doubles: one row of distances */
    for (size_t i = 0; i < m; i++) {
        size_t q = 0;
        for (size_t j = 0; j < m; j++) {
            if (j == i) continue;
            double d = g[i * m + i] + g[j * m + j] - 2.0 * g[i * m + j];
            row[q++] = d > 0 ? d : 0.0;
        }
        qsort(row, q, sizeof *row, cmp_double);
        double s = 0.0;
        for (size_t j = 0; j < k && j < q; j++) s += row[j];
        score[i] = s;
    }
    return FED_OK;
}

/* Krum (keep 1) or multi-Krum (keep m - f): the unweighted mean of the best-scored. */
static fed_err krum(robust_stage *t, float *out, uint64_t round) {
    size_t m = fed_spill_rows(t->sp), f = t->cfg.byzantine, bl = fed_spill_block(t->sp);
    size_t k = m > f + 2 ? m - f - 2 : 1;
    size_t keep = t->cfg.rule == FED_ROBUST_KRUM ? 1 : (m > f ? m - f : 1);
    fed_err err = reserve((void **)&t->blk, &t->blk_n, m * bl, sizeof(float));
    if (!err) err = reserve((void **)&t->col, &t->col_n, m * m, sizeof(float));
    if (!err) err = reserve((void **)&t->dist, &t->dist_n, m * m + 3 * m, sizeof(double));
    if (err) return err;
    double *score = t->dist + m * m + m, *c = score + m;
    if ((err = krum_scores(t, k, score))) return err;
    for (size_t i = 0; i < m; i++) c[i] = 0.0;
    for (size_t kept = 0; kept < keep; kept++) { /* the lowest scores; ties: the first */
        size_t best = m;
        for (size_t i = 0; i < m; i++)
            if (c[i] == 0.0 && (best == m || score[i] < score[best])) best = i;
        c[best] = 1.0 / (double)keep;
    }
    FED_LOG(FED_LOG_INFO, "round %" PRIu64 ": %s kept %zu of %zu updates", round,
            fed_robust_name(t->cfg.rule), keep, m);
    combine(t, c, out);
    return FED_OK;
}

/* The median of the spilled updates' norms (tmp: rows doubles of scratch). */
static double median_norm(const fed_spill *sp, double *tmp) {
    size_t m = fed_spill_rows(sp);
    for (size_t i = 0; i < m; i++) tmp[i] = fed_spill_norm(sp, i);
    qsort(tmp, m, sizeof *tmp, cmp_double);
    return m % 2 ? tmp[m / 2] : 0.5 * (tmp[m / 2 - 1] + tmp[m / 2]);
}

/* The weighted mean of the updates clipped to the bound (or the median norm). */
static fed_err norm_bound(robust_stage *t, float *out, size_t *clipped) {
    size_t m = fed_spill_rows(t->sp), bl = fed_spill_block(t->sp);
    fed_err err = reserve((void **)&t->blk, &t->blk_n, m * bl, sizeof(float));
    if (!err) err = reserve((void **)&t->dist, &t->dist_n, 2 * m, sizeof(double));
    if (err) return err;
    double *c = t->dist, bound = t->cfg.norm_bound, wsum = 0.0;
    if (!(bound > 0)) bound = median_norm(t->sp, c);
    *clipped = 0;
    for (size_t i = 0; i < m; i++) wsum += fed_spill_weight(t->sp, i);
    for (size_t i = 0; i < m; i++) {
        double nrm = fed_spill_norm(t->sp, i), f = 1.0;
        if (nrm > bound) {
            f = bound / nrm;
            (*clipped)++;
        }
        c[i] = fed_spill_weight(t->sp, i) * f / wsum;
    }
    combine(t, c, out);
    return FED_OK;
}

/* out = sum_i c[i] x_i as combine(), and in the same pass (each block's rows are at hand
 * once its part of out is made) d[i] = ||x_i - out||. */
static void combine_dist(robust_stage *t, const double *c, float *out, double *d) {
    size_t m = fed_spill_rows(t->sp), n = fed_spill_size(t->sp), bl = fed_spill_block(t->sp);
    for (size_t i = 0; i < m; i++) d[i] = 0.0;
    for (size_t off = 0; off < n; off += bl) {
        size_t cnt = n - off < bl ? n - off : bl;
        fed_spill_gather(t->sp, off, cnt, t->blk);
        float *z = out + off;
        memset(z, 0, cnt * sizeof(float));
        for (size_t i = 0; i < m; i++)
            if (c[i] != 0.0) fed_axpy(cnt, (float)c[i], t->blk + i * cnt, z);
        for (size_t i = 0; i < m; i++) {
            const float *x = t->blk + i * cnt;
            double s = 0.0;
            for (size_t j = 0; j < cnt; j++) {
                double e = (double)x[j] - (double)z[j];
                s += e * e;
            }
            d[i] += s;
        }
    }
    for (size_t i = 0; i < m; i++) d[i] = sqrt(d[i]);
}

/* The weighted geometric median into out (smoothed Weiszfeld: each iteration weighs x_i
 * by w_i / max(nu, ||x_i - z||)), one pass over the spill per iteration. */
static fed_err rfa(robust_stage *t, float *out, uint64_t round) {
    size_t m = fed_spill_rows(t->sp), n = fed_spill_size(t->sp), bl = fed_spill_block(t->sp);
    fed_err err = reserve((void **)&t->blk, &t->blk_n, m * bl, sizeof(float));
    if (!err) err = reserve((void **)&t->dist, &t->dist_n, 2 * m, sizeof(double));
    if (!err && !t->z && !(t->z = fed_mallocarray(n, sizeof(float)))) err = FED_ENOMEM;
    if (err) return err;
    double *d = t->dist, *c = t->dist + m, med = median_norm(t->sp, d), s0 = 0.0;
    double nu = 1e-6 * (med > 0 ? med : 1.0);
    /* The start: the weighted mean of the updates no longer than the median (a scaled
     * update would drag the plain mean so far that Weiszfeld needs many steps back). */
    for (size_t i = 0; i < m; i++) {
        c[i] = fed_spill_norm(t->sp, i) <= med ? fed_spill_weight(t->sp, i) : 0.0;
        s0 += c[i];
    }
    for (size_t i = 0; i < m; i++) c[i] /= s0;
    combine_dist(t, c, out, d);
    int it = 0;
    for (; it < RFA_ITERS; it++) {
        double s = 0.0;
        for (size_t i = 0; i < m; i++) {
            c[i] = fed_spill_weight(t->sp, i) / (d[i] > nu ? d[i] : nu);
            s += c[i];
        }
        for (size_t i = 0; i < m; i++) c[i] /= s;
        combine_dist(t, c, t->z, d);
        double step = 0.0, zn = fed_sumsq(n, t->z);
        for (size_t j = 0; j < n; j++) {
            double e = (double)t->z[j] - (double)out[j];
            step += e * e;
        }
        memcpy(out, t->z, n * sizeof(float));
        if (sqrt(step) <= RFA_TOL * sqrt(zn)) {
            it++;
            break;
        }
    }
    FED_LOG(FED_LOG_INFO, "round %" PRIu64 ": rfa: %d Weiszfeld iterations over %zu updates", round,
            it, m);
    return FED_OK;
}

static fed_err robust_close(fed_stage *s, fed_round_agg *r) {
    robust_stage *t = (robust_stage *)s;
    if (fed_spill_rows(t->sp) != r->accepted)
        return fed_errorf(FED_EINTERNAL, "%s: %zu updates spilled, %zu accepted",
                          t->base.type->name, fed_spill_rows(t->sp), r->accepted);
    switch (t->cfg.rule) {
    case FED_ROBUST_MEDIAN:
    case FED_ROBUST_TRIMMED_MEAN:
        return per_coordinate(t, r->mean);
    case FED_ROBUST_KRUM:
    case FED_ROBUST_MULTI_KRUM:
        return krum(t, r->mean, r->round);
    case FED_ROBUST_NORM:
        return norm_bound(t, r->mean, &r->clipped);
    case FED_ROBUST_RFA:
        return rfa(t, r->mean, r->round);
    case FED_ROBUST_MEAN:
        break;
    }
    return FED_OK;
}

#define ROBUST_TYPE(rule, label)                                                                   \
    [rule] = {.name = label,                                                                       \
              .close = robust_close,                                                               \
              .destroy = robust_destroy,                                                           \
              .update = robust_update,                                                             \
              .begin = robust_begin}
static const fed_stage_type robust_types[] = {
    ROBUST_TYPE(FED_ROBUST_MEDIAN, "median"), ROBUST_TYPE(FED_ROBUST_TRIMMED_MEAN, "trimmed-mean"),
    ROBUST_TYPE(FED_ROBUST_KRUM, "krum"),     ROBUST_TYPE(FED_ROBUST_MULTI_KRUM, "multi-krum"),
    ROBUST_TYPE(FED_ROBUST_NORM, "norm"),     ROBUST_TYPE(FED_ROBUST_RFA, "rfa"),
};
#undef ROBUST_TYPE

fed_err fed_stage_robust_new(fed_stage **chain, const fed_coord_robust_config *cfg, size_t n,
                             const char *spill_dir) {
    if (cfg->rule == FED_ROBUST_MEAN || (size_t)cfg->rule >= NRULES)
        return fed_errorf(FED_EINVAL, "robust stage: rule %d is not a robust rule", (int)cfg->rule);
    robust_stage *t = fed_calloc(1, sizeof *t);
    if (!t) return FED_ENOMEM;
    t->base.type = &robust_types[cfg->rule];
    t->cfg = *cfg;
    fed_err err = fed_spill_new(&t->sp, spill_dir, n);
    if (err) {
        fed_free(t);
        return err;
    }
    fed_stage_append(chain, &t->base);
    return FED_OK;
}

/* Robust rounds: plain rounds only (start-up refuses secagg and DP with a rule). A fixed
 * norm bound is the aggregator's clipping and needs no stage. */
fed_err fed__coord_stage_robust(fed_stage **chain, fed_coord *c) {
    const fed_coord_robust_config *rc = &c->cfg.robust;
    if (rc->rule == FED_ROBUST_MEAN || c->cfg.secagg.on) return FED_OK;
    if (rc->rule == FED_ROBUST_NORM && rc->norm_bound > 0) {
        fed_agg_set_clip(c->agg, rc->norm_bound);
        return FED_OK;
    }
    const char *dir = rc->spill_dir ? rc->spill_dir : c->cfg.ckpt.dir;
    if (dir && !rc->spill_dir && mkdir(dir, 0755) != 0 && errno != EEXIST) /* written later */
        return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
    return fed_stage_robust_new(chain, rc, c->ntrainable, dir);
}
