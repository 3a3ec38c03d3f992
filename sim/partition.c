/* The partitioners of partition.h. Each one decides an owner (a client) for every example
 * and one counting pass turns owners into the offsets/index form, which is why every
 * client's indices come out ascending for free. The Dirichlet's randomness is drawn with
 * a log, exp and normal written here in IEEE-exact operations so that a seed gives the
 * same partition on every machine and libm; the statistics use libm (they only report).
 * Nothing here gathers rows or prints. */
#include "sim/partition.h"
#include "core/alloc.h"
#include "core/rng.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Clang contracts a*b+c into an FMA where the target has one (GCC does not in ISO C
 * mode): that could change the Dirichlet's bits from one machine to the next. A build
 * with -ffp-contract=fast overrides this; tests/test_sim_partition.c pins digests. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* The RNG stream of fed_rng_stream(seed, .) used by the partitioners: "partitio". */
#define PART_STREAM 0x706172746974696fULL

/* Longest piece of a user's spec quoted back in an error. */
#define SPEC_QUOTE 80

fed_part_config fed_part_default_config(void) {
    fed_part_config c = {
        .kind = FED_PART_IID,
        .clients = 100,
        .alpha = 0.5,
        .min_size = 10,
        .shards_per_client = 2,
        .labels_per_client = 2,
        .seed = 1,
    };
    return c;
}

/* ---- parsing ------------------------------------------------------------------------- */

static fed_err parse_count(const char *spec, const char *what, const char *text, size_t *out) {
    if (!*text)
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": %s is missing", SPEC_QUOTE, spec, what);
    size_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return fed_errorf(FED_EINVAL, "partition \"%.*s\": %s \"%.*s\" is not a whole number",
                              SPEC_QUOTE, spec, what, SPEC_QUOTE, text);
        if (!fed_mul_ok(v, 10, &v) || !fed_add_ok(v, (size_t)(*p - '0'), &v))
            return fed_errorf(FED_EINVAL, "partition \"%.*s\": %s is too large", SPEC_QUOTE, spec,
                              what);
    }
    if (v == 0)
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": %s must be >= 1", SPEC_QUOTE, spec,
                          what);
    *out = v;
    return FED_OK;
}

static fed_err parse_alpha(const char *spec, const char *text, double *out) {
    if (!*text)
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": alpha is missing, as in dirichlet:0.5",
                          SPEC_QUOTE, spec);
    /* strtod alone would take leading blanks, "inf", "nan" and hex floats. */
    bool plain = true;
    for (const char *p = text; *p; p++)
        if (!strchr("0123456789.eE+-", *p)) plain = false;
    char *end = NULL;
    double v = plain ? strtod(text, &end) : 0.0;
    if (!plain || end == text || *end)
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": alpha \"%.*s\" is not a number",
                          SPEC_QUOTE, spec, SPEC_QUOTE, text);
    if (!isfinite(v))
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": alpha \"%.*s\" is too large", SPEC_QUOTE,
                          spec, SPEC_QUOTE, text);
    if (!(v > 0.0))
        return fed_errorf(FED_EINVAL, "partition \"%.*s\": alpha must be > 0", SPEC_QUOTE, spec);
    *out = v;
    return FED_OK;
}

fed_err fed_part_parse(const char *spec, fed_part_config *cfg) {
    static const char expected[] = "expected iid, dirichlet:ALPHA, shards:K or labels:K";
    if (!spec) return fed_errorf(FED_EINVAL, "partition: no spec given; %s", expected);
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *arg = colon ? colon + 1 : NULL;
    static const struct {
        const char *name;
        fed_part_kind kind;
    } kinds[] = {{"iid", FED_PART_IID},
                 {"dirichlet", FED_PART_DIRICHLET},
                 {"shards", FED_PART_SHARDS},
                 {"labels", FED_PART_LABELS}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strlen(kinds[k].name) != name_len || strncmp(spec, kinds[k].name, name_len) != 0)
            continue;
        fed_err err = FED_OK;
        switch (kinds[k].kind) {
        case FED_PART_IID:
            if (arg)
                return fed_errorf(FED_EINVAL, "partition \"%.*s\": iid takes no parameter",
                                  SPEC_QUOTE, spec);
            cfg->kind = FED_PART_IID;
            return FED_OK;
        case FED_PART_DIRICHLET: {
            if (!arg)
                return fed_errorf(FED_EINVAL,
                                  "partition \"%.*s\": dirichlet needs an alpha, as in "
                                  "dirichlet:0.5",
                                  SPEC_QUOTE, spec);
            double alpha = 0.0;
            if ((err = parse_alpha(spec, arg, &alpha))) return err;
            cfg->kind = FED_PART_DIRICHLET;
            cfg->alpha = alpha;
            return FED_OK;
        }
        case FED_PART_SHARDS:
        case FED_PART_LABELS: {
            bool shards = kinds[k].kind == FED_PART_SHARDS;
            const char *what = shards ? "shards per client" : "labels per client";
            if (!arg)
                return fed_errorf(FED_EINVAL, "partition \"%.*s\": %s needs K, as in %s:2",
                                  SPEC_QUOTE, spec, kinds[k].name, kinds[k].name);
            size_t v = 0;
            if ((err = parse_count(spec, what, arg, &v))) return err;
            cfg->kind = kinds[k].kind;
            if (shards)
                cfg->shards_per_client = v;
            else
                cfg->labels_per_client = v;
            return FED_OK;
        }
        }
    }
    return fed_errorf(FED_EINVAL, "partition \"%.*s\": unknown kind \"%.*s\"; %s", SPEC_QUOTE, spec,
                      (int)(name_len < SPEC_QUOTE ? name_len : SPEC_QUOTE), spec, expected);
}

/* ---- deterministic maths for the Dirichlet ------------------------------------------- */

/* Only + - * / and sqrt (IEEE: correctly rounded, identical everywhere) plus frexp and
 * ldexp (exact) are used below. Accuracy is about 1e-16 relative, which is plenty; what
 * matters is that no libm's last bit can move a cut between two clients. */

static const double LN2_HI = 6.93147180369123816490e-01; /* ln 2, upper 32 bits */
static const double LN2_LO = 1.90821492927058770002e-10; /* ln 2 - LN2_HI */

/* Natural log of x > 0 (-infinity for 0). */
static double det_log(double x) {
    if (!(x > 0.0)) return -HUGE_VAL;
    int e;
    double m = frexp(x, &e); /* x = m 2^e, m in [0.5, 1) */
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e--;
    }
    /* log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), |s| <= 0.172: 12 terms. */
    double s = (m - 1.0) / (m + 1.0), s2 = s * s, sum = 1.0 / 25.0;
    for (int k = 11; k >= 0; k--) sum = 1.0 / (double)(2 * k + 1) + s2 * sum;
    return (double)e * LN2_HI + ((double)e * LN2_LO + 2.0 * s * sum);
}

/* e^x for x <= 0 (what the weights need); 0 below the smallest normal's exponent. */
static double det_exp(double x) {
    if (x < -708.0) return 0.0;
    if (x > 0.0) x = 0.0;
    double kd = floor(x / (LN2_HI + LN2_LO) + 0.5);
    double r = (x - kd * LN2_HI) - kd * LN2_LO; /* |r| <= 0.35 */
    double sum = 1.0;
    for (int k = 16; k >= 1; k--) sum = 1.0 + r * sum / (double)k;
    return ldexp(sum, (int)kd);
}

/* Standard normal by Marsaglia's polar method (one of the pair is dropped). */
static double det_normal(fed_rng *r) {
    double u, v, s;
    do {
        u = 2.0 * fed_rng_uniform_d(r) - 1.0;
        v = 2.0 * fed_rng_uniform_d(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return u * sqrt(-2.0 * det_log(s) / s);
}

/* Uniform in (0, 1]: never 0, so its log is finite. */
static double uniform_pos(fed_rng *r) {
    return (double)((fed_rng_u64(r) >> 11) + 1) * 0x1.0p-53;
}

/* log of a Gamma(a, 1) variate, a > 0 (Marsaglia & Tsang 2000). Kept in logs because for
 * small a the variate itself underflows to 0 (a = 0.01: U^100); for a < 1 it uses
 * Gamma(a) = Gamma(a + 1) U^(1/a). */
static double log_gamma_variate(fed_rng *r, double a) {
    double boost = 0.0;
    if (a < 1.0) {
        boost = det_log(uniform_pos(r)) / a;
        a += 1.0;
    }
    const double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = det_normal(r), v = 1.0 + c * x;
        if (v <= 0.0) continue;
        v = v * v * v;
        double u = uniform_pos(r), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || det_log(u) < 0.5 * x2 + d * (1.0 - v + det_log(v)))
            return det_log(d) + det_log(v) + boost;
    }
}

/* ---- building the partition ---------------------------------------------------------- */

/* The partition whose client c holds the examples i with owner[i] == c, ascending. */
static fed_err from_owners(fed_partition **out, const uint32_t *owner, size_t n, size_t clients) {
    fed_partition *p = fed_calloc(1, sizeof *p);
    if (!p) return FED_ENOMEM;
    p->clients = clients;
    p->n = n;
    p->offsets = fed_calloc(clients + 1, sizeof *p->offsets);
    p->index = fed_mallocarray(n ? n : 1, sizeof *p->index);
    size_t *next = fed_mallocarray(clients, sizeof *next);
    if (!p->offsets || !p->index || !next) {
        fed_free(next);
        fed_partition_destroy(&p);
        return FED_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) p->offsets[owner[i] + 1]++;
    for (size_t c = 0; c < clients; c++) p->offsets[c + 1] += p->offsets[c];
    memcpy(next, p->offsets, clients * sizeof *next);
    for (size_t i = 0; i < n; i++) p->index[next[owner[i]]++] = (uint32_t)i;
    fed_free(next);
    *out = p;
    return FED_OK;
}

/* Start of piece j when m things are cut into parts pieces whose sizes differ by <= 1. */
static size_t cut(size_t j, size_t m, size_t parts) {
    return (size_t)((uint64_t)j * (uint64_t)m / (uint64_t)parts);
}

/* Examples grouped by label, file order within a label: label l's examples are
 * order[start[l] .. start[l+1]). start has classes + 1 entries. */
static void sort_by_label(const int32_t *labels, size_t n, size_t classes, size_t *start,
                          size_t *order) {
    memset(start, 0, (classes + 1) * sizeof *start);
    for (size_t i = 0; i < n; i++) start[labels[i] + 1]++;
    for (size_t l = 0; l < classes; l++) start[l + 1] += start[l];
    for (size_t i = 0; i < n; i++) order[start[labels[i]]++] = i;
    for (size_t l = classes; l > 0; l--) start[l] = start[l - 1];
    start[0] = 0;
}

static fed_err part_iid(uint32_t *owner, size_t n, size_t clients, fed_rng *rng, size_t *perm) {
    for (size_t i = 0; i < n; i++) perm[i] = i;
    fed_rng_shuffle(rng, perm, n);
    for (size_t c = 0; c < clients; c++) {
        size_t lo = cut(c, n, clients), hi = cut(c + 1, n, clients);
        for (size_t k = lo; k < hi; k++) owner[perm[k]] = (uint32_t)c;
    }
    return FED_OK;
}

static fed_err part_dirichlet(uint32_t *owner, const int32_t *labels, size_t n, size_t classes,
                              const fed_part_config *cfg, fed_rng *rng, size_t *order) {
    const size_t clients = cfg->clients;
    fed_err err = FED_ENOMEM;
    size_t *start = fed_mallocarray(classes + 1, sizeof *start);
    size_t *count = fed_mallocarray(clients, sizeof *count);
    double *w = fed_mallocarray(clients, sizeof *w);
    if (!start || !count || !w) goto done;
    sort_by_label(labels, n, classes, start, order);
    for (size_t l = 0; l < classes; l++)
        fed_rng_shuffle(rng, order + start[l], start[l + 1] - start[l]);

    for (int draw = 0; draw < FED_PART_MAX_DRAWS; draw++) {
        memset(count, 0, clients * sizeof *count);
        for (size_t l = 0; l < classes; l++) {
            size_t m = start[l + 1] - start[l];
            if (m == 0) continue;
            /* Proportions w_j / sum w, with w_j = G_j / max G computed in logs. */
            double top = -HUGE_VAL, total = 0.0;
            for (size_t j = 0; j < clients; j++) {
                w[j] = log_gamma_variate(rng, cfg->alpha);
                if (w[j] > top) top = w[j];
            }
            for (size_t j = 0; j < clients; j++) total += (w[j] = det_exp(w[j] - top));
            /* Client j takes the examples between the cumulative proportions before and
             * after it (scaled to m and rounded down); the last client ends at m. */
            double acc = 0.0;
            size_t lo = 0;
            for (size_t j = 0; j < clients; j++) {
                acc += w[j];
                size_t hi = j + 1 == clients ? m : (size_t)floor((double)m * (acc / total));
                if (hi > m) hi = m;
                if (hi < lo) hi = lo;
                for (size_t k = lo; k < hi; k++) owner[order[start[l] + k]] = (uint32_t)j;
                count[j] += hi - lo;
                lo = hi;
            }
        }
        size_t fewest = SIZE_MAX;
        for (size_t j = 0; j < clients; j++)
            if (count[j] < fewest) fewest = count[j];
        if (fewest >= cfg->min_size) {
            err = FED_OK;
            goto done;
        }
    }
    err = fed_errorf(FED_EINVAL,
                     "partition dirichlet: no draw of %d gave every client min_size %zu "
                     "examples (alpha %g, %zu clients, %zu examples); lower min_size or raise "
                     "alpha",
                     FED_PART_MAX_DRAWS, cfg->min_size, cfg->alpha, clients, n);
done:
    fed_free(start);
    fed_free(count);
    fed_free(w);
    return err;
}

static fed_err part_shards(uint32_t *owner, const int32_t *labels, size_t n, size_t classes,
                           const fed_part_config *cfg, fed_rng *rng, size_t *order) {
    const size_t clients = cfg->clients, k = cfg->shards_per_client, shards = clients * k;
    size_t *start = fed_mallocarray(classes + 1, sizeof *start);
    size_t *deal = fed_mallocarray(shards, sizeof *deal);
    if (!start || !deal) {
        fed_free(start);
        fed_free(deal);
        return FED_ENOMEM;
    }
    sort_by_label(labels, n, classes, start, order);
    for (size_t s = 0; s < shards; s++) deal[s] = s;
    fed_rng_shuffle(rng, deal, shards);
    /* Client c gets shards deal[c*k .. c*k+k); shard s is order[cut(s) .. cut(s+1)). */
    for (size_t t = 0; t < shards; t++) {
        size_t lo = cut(deal[t], n, shards), hi = cut(deal[t] + 1, n, shards);
        for (size_t i = lo; i < hi; i++) owner[order[i]] = (uint32_t)(t / k);
    }
    fed_free(start);
    fed_free(deal);
    return FED_OK;
}

/* seq[0 .. clients*K): the label held in each slot; client c has slots c*K .. c*K+K-1.
 * Laid out as shuffles of the present labels end to end; when a client's K slots cross
 * from one shuffle into the next, the next shuffle's head is reordered so it repeats
 * none of the labels the client already took from the previous one. Needs K <= present
 * (then a client's slots cross at most one boundary and enough labels remain). */
static void deal_labels(uint32_t *seq, size_t slots, size_t k, const size_t *present,
                        size_t npresent, size_t *perm, bool *taken, fed_rng *rng) {
    for (size_t pos = 0; pos < slots; pos += npresent) {
        memcpy(perm, present, npresent * sizeof *perm);
        fed_rng_shuffle(rng, perm, npresent);
        size_t tail = pos % k; /* slots of the straddling client before this shuffle */
        if (tail) {
            size_t head = k - tail, spare = head;
            for (size_t i = pos - tail; i < pos; i++) taken[seq[i]] = true;
            for (size_t i = 0; i < head; i++) {
                if (!taken[perm[i]]) continue;
                while (taken[perm[spare]]) spare++; /* exists: npresent - tail >= head */
                size_t t = perm[i];
                perm[i] = perm[spare];
                perm[spare] = t;
            }
            for (size_t i = pos - tail; i < pos; i++) taken[seq[i]] = false;
        }
        for (size_t i = 0; i < npresent && pos + i < slots; i++) seq[pos + i] = (uint32_t)perm[i];
    }
}

static fed_err part_labels(uint32_t *owner, const int32_t *labels, size_t n, size_t classes,
                           const fed_part_config *cfg, fed_rng *rng, size_t *order) {
    const size_t clients = cfg->clients, k = cfg->labels_per_client, slots = clients * k;
    fed_err err = FED_ENOMEM;
    size_t *start = fed_mallocarray(classes + 1, sizeof *start);
    size_t *present = fed_mallocarray(classes, sizeof *present);
    size_t *perm = fed_mallocarray(classes, sizeof *perm);
    bool *taken = fed_calloc(classes, sizeof *taken);
    uint32_t *seq = fed_mallocarray(slots, sizeof *seq);
    size_t *hstart = fed_calloc(classes + 1, sizeof *hstart);
    uint32_t *holder = fed_mallocarray(slots, sizeof *holder);
    if (!start || !present || !perm || !taken || !seq || !hstart || !holder) goto done;
    sort_by_label(labels, n, classes, start, order);
    size_t npresent = 0;
    for (size_t l = 0; l < classes; l++)
        if (start[l + 1] > start[l]) present[npresent++] = l;
    if (k > npresent) {
        err = fed_errorf(FED_EINVAL,
                         "partition labels: labels_per_client %zu but only %zu of the %zu "
                         "classes occur in the data",
                         k, npresent, classes);
        goto done;
    }
    if (slots < npresent) {
        err = fed_errorf(FED_EINVAL,
                         "partition labels: clients * labels_per_client = %zu * %zu = %zu "
                         "cannot hold the %zu labels that occur; every example needs a client",
                         clients, k, slots, npresent);
        goto done;
    }
    deal_labels(seq, slots, k, present, npresent, perm, taken, rng);

    /* Holders of each label, in client order: holder[hstart[l] .. hstart[l+1]). */
    for (size_t s = 0; s < slots; s++) hstart[seq[s] + 1]++;
    for (size_t l = 0; l < classes; l++) hstart[l + 1] += hstart[l];
    for (size_t s = 0; s < slots; s++) holder[hstart[seq[s]]++] = (uint32_t)(s / k);
    for (size_t l = classes; l > 0; l--) hstart[l] = hstart[l - 1];
    hstart[0] = 0;

    for (size_t l = 0; l < classes; l++) {
        size_t m = start[l + 1] - start[l], h = hstart[l + 1] - hstart[l];
        if (m == 0) continue;
        if (m < h) {
            err = fed_errorf(FED_EINVAL,
                             "partition labels: label %zu has %zu examples but %zu clients "
                             "hold it; lower clients or labels_per_client",
                             l, m, h);
            goto done;
        }
        size_t *ex = order + start[l];
        fed_rng_shuffle(rng, ex, m);
        for (size_t j = 0; j < h; j++) {
            size_t lo = cut(j, m, h), hi = cut(j + 1, m, h);
            for (size_t i = lo; i < hi; i++) owner[ex[i]] = holder[hstart[l] + j];
        }
    }
    err = FED_OK;
done:
    fed_free(start);
    fed_free(present);
    fed_free(perm);
    fed_free(taken);
    fed_free(seq);
    fed_free(hstart);
    fed_free(holder);
    return err;
}

/* Checks what does not depend on the data's contents beyond n and classes. */
static fed_err check_config(const fed_part_config *cfg, size_t n, size_t classes) {
    const size_t clients = cfg->clients;
    size_t prod;
    if (clients == 0) return fed_errorf(FED_EINVAL, "partition: clients is 0; need at least 1");
    if (classes == 0) return fed_errorf(FED_EINVAL, "partition: classes is 0; need at least 1");
    if (n > UINT32_MAX)
        return fed_errorf(FED_EINVAL, "partition: %zu examples; at most %lu are supported", n,
                          (unsigned long)UINT32_MAX);
    if (clients > n)
        return fed_errorf(FED_EINVAL, "partition: clients %zu exceeds the %zu examples", clients,
                          n);
    switch (cfg->kind) {
    case FED_PART_IID:
        return FED_OK;
    case FED_PART_DIRICHLET:
        if (!(cfg->alpha > 0.0) || !isfinite(cfg->alpha))
            return fed_errorf(FED_EINVAL, "partition dirichlet: alpha %g must be finite and > 0",
                              cfg->alpha);
        if (!fed_mul_ok(cfg->min_size, clients, &prod) || prod > n)
            return fed_errorf(FED_EINVAL,
                              "partition dirichlet: min_size %zu for each of %zu clients "
                              "needs more than the %zu examples",
                              cfg->min_size, clients, n);
        return FED_OK;
    case FED_PART_SHARDS:
        if (cfg->shards_per_client == 0)
            return fed_errorf(FED_EINVAL, "partition shards: shards_per_client is 0; need >= 1");
        if (!fed_mul_ok(cfg->shards_per_client, clients, &prod) || prod > n)
            return fed_errorf(FED_EINVAL,
                              "partition shards: clients * shards_per_client = %zu * %zu "
                              "shards exceeds the %zu examples; shards would be empty",
                              clients, cfg->shards_per_client, n);
        return FED_OK;
    case FED_PART_LABELS:
        if (cfg->labels_per_client == 0 || cfg->labels_per_client > classes)
            return fed_errorf(FED_EINVAL,
                              "partition labels: labels_per_client %zu must be in 1..%zu "
                              "(classes)",
                              cfg->labels_per_client, classes);
        return FED_OK; /* clients * K <= clients * classes, and clients <= n: no overflow */
    }
    return fed_errorf(FED_EINVAL, "partition: unknown kind %d", (int)cfg->kind);
}

fed_err fed_partition_make(fed_partition **out, const int32_t *labels, size_t n, size_t classes,
                           const fed_part_config *cfg) {
    *out = NULL;
    if (!cfg) return fed_errorf(FED_EINVAL, "partition: no configuration");
    fed_err err = check_config(cfg, n, classes);
    if (err) return err;
    if (!labels) return fed_errorf(FED_EINVAL, "partition: labels is NULL for %zu examples", n);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || (size_t)labels[i] >= classes)
            return fed_errorf(FED_EINVAL, "partition: labels[%zu] is %ld, not in [0, %zu)", i,
                              (long)labels[i], classes);

    uint32_t *owner = fed_mallocarray(n, sizeof *owner);
    size_t *order = fed_mallocarray(n, sizeof *order);
    if (!owner || !order) {
        err = FED_ENOMEM;
        goto done;
    }
    fed_rng rng = fed_rng_stream(cfg->seed, PART_STREAM);
    switch (cfg->kind) {
    case FED_PART_IID:
        err = part_iid(owner, n, cfg->clients, &rng, order);
        break;
    case FED_PART_DIRICHLET:
        err = part_dirichlet(owner, labels, n, classes, cfg, &rng, order);
        break;
    case FED_PART_SHARDS:
        err = part_shards(owner, labels, n, classes, cfg, &rng, order);
        break;
    case FED_PART_LABELS:
        err = part_labels(owner, labels, n, classes, cfg, &rng, order);
        break;
    }
    if (!err) err = from_owners(out, owner, n, cfg->clients);
done:
    fed_free(owner);
    fed_free(order);
    return err;
}

void fed_partition_destroy(fed_partition **p) {
    if (!p || !*p) return;
    fed_free((*p)->offsets);
    fed_free((*p)->index);
    fed_free(*p);
    *p = NULL;
}

/* ---- statistics ---------------------------------------------------------------------- */

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

fed_err fed_partition_stats(const fed_partition *p, const int32_t *labels, size_t classes,
                            fed_part_stats *out) {
    if (!p || !out || p->clients == 0 || (p->n && !labels))
        return fed_errorf(FED_EINVAL, "partition stats: no partition, labels or output");
    if (classes == 0) return fed_errorf(FED_EINVAL, "partition stats: classes is 0");
    fed_err err = FED_ENOMEM;
    size_t *hist = fed_calloc(classes, sizeof *hist);
    size_t *sizes = fed_mallocarray(p->clients, sizeof *sizes);
    if (!hist || !sizes) goto done;
    fed_part_stats s = {.min_labels = SIZE_MAX, .min_examples = SIZE_MAX};
    double labels_sum = 0.0, entropy_sum = 0.0;
    for (size_t c = 0; c < p->clients; c++) {
        size_t lo = p->offsets[c], hi = p->offsets[c + 1], m = hi - lo, distinct = 0;
        for (size_t k = lo; k < hi; k++) {
            uint32_t i = p->index[k];
            if (i >= p->n || labels[i] < 0 || (size_t)labels[i] >= classes) {
                err = fed_errorf(FED_EINVAL,
                                 "partition stats: example %lu of client %zu has no label in "
                                 "[0, %zu)",
                                 (unsigned long)i, c, classes);
                goto done;
            }
            if (hist[labels[i]]++ == 0) distinct++;
        }
        double h = 0.0;
        for (size_t k = lo; k < hi; k++) { /* each label once: its count is zeroed after */
            size_t cnt = hist[labels[p->index[k]]];
            if (cnt == 0) continue;
            double q = (double)cnt / (double)m;
            h -= q * log(q);
            hist[labels[p->index[k]]] = 0;
        }
        sizes[c] = m;
        if (m < s.min_examples) s.min_examples = m;
        if (m > s.max_examples) s.max_examples = m;
        if (distinct < s.min_labels) s.min_labels = distinct;
        if (distinct > s.max_labels) s.max_labels = distinct;
        labels_sum += (double)distinct;
        entropy_sum += h;
    }
    qsort(sizes, p->clients, sizeof *sizes, cmp_size);
    s.median_examples = sizes[(p->clients - 1) / 2];
    s.mean_examples = (double)p->n / (double)p->clients;
    s.mean_labels = labels_sum / (double)p->clients;
    s.mean_entropy = entropy_sum / (double)p->clients;
    s.max_entropy = log((double)classes);
    *out = s;
    err = FED_OK;
done:
    fed_free(hist);
    fed_free(sizes);
    return err;
}

void fed_partition_describe(const fed_part_stats *s, size_t clients, char *out, size_t len) {
    if (!out || len == 0) return;
    snprintf(out, len,
             "%zu client%s: examples per client min %zu median %zu max %zu (mean %.1f); labels "
             "per client min %zu mean %.1f max %zu; label entropy %.2f of %.2f nats",
             clients, clients == 1 ? "" : "s", s->min_examples, s->median_examples, s->max_examples,
             s->mean_examples, s->min_labels, s->mean_labels, s->max_labels, s->mean_entropy,
             s->max_entropy);
}
