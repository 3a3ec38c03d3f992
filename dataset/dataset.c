/* Data sets in memory: construction, the cleaning report (duplicate and conflicting rows
 * found by hashing feature bytes into an open-addressing table), subsets, seeded
 * stratified splits, the standardizer and its JSON form, batch gathering and
 * augmentation. Parsing lives in dataset_csv.c (CSV, sklearn) and dataset_io.c (files,
 * gzip, IDX). */
#include "dataset/dataset.h"
#include "core/alloc.h"
#include "dataset/data_internal.h"
#include "core/json.h"

#include <assert.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sets ---------------------------------------------------------------------------- */

/* A set of n examples, with a zeroed float matrix when dense (else x stays NULL, for a
 * byte set's subset). */
static fed_err data_alloc(fed_dataset **out, size_t n, size_t dim, size_t num_classes, bool dense) {
    *out = NULL;
    if (dim == 0 || num_classes == 0 || num_classes > FED_DATA_MAX_CLASSES)
        return fed_errorf(FED_EINVAL, "data set: %zu features, %zu classes", dim, num_classes);
    size_t cells;
    if (!fed_mul_ok(n, dim, &cells)) return fed_errorf(FED_ENOMEM, "data set: too large");
    fed_dataset *d = fed_calloc(1, sizeof *d);
    if (!d) return FED_ENOMEM;
    d->x = dense ? fed_aligned_alloc(cells, sizeof(float)) : NULL;
    d->y = fed_calloc(n, sizeof(int32_t));
    if ((dense && !d->x) || !d->y) {
        fed_data_destroy(&d);
        return FED_ENOMEM;
    }
    if (dense) memset(d->x, 0, cells * sizeof(float));
    d->n = n;
    d->dim = dim;
    d->shape.ndim = 1;
    d->shape.d[0] = dim;
    d->num_classes = num_classes;
    *out = d;
    return FED_OK;
}

fed_err fed_data_new(fed_dataset **out, size_t n, size_t dim, size_t num_classes) {
    return data_alloc(out, n, dim, num_classes, true);
}

void fed_data_destroy(fed_dataset **d) {
    if (!d || !*d) return;
    fed_dataset *p = *d;
    if (p->class_names)
        for (size_t i = 0; i < p->num_classes; i++) fed_free(p->class_names[i]);
    fed_free(p->class_names);
    fed_free(p->x);
    fed__bytes_release(p);
    fed_free(p->y);
    fed_free(p);
    *d = NULL;
}

/* ---- cleaning report ----------------------------------------------------------------- */

/* Feature bits with -0 folded into +0 and every NaN into one, so == and hashing agree. */
static uint32_t canon_bits(float v) {
    uint32_t b;
    if (v == 0.0f) return 0;
    if (isnan(v)) return 0x7fc00000u;
    memcpy(&b, &v, sizeof b);
    return b;
}

static uint64_t row_hash(const float *x, size_t dim) {
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (size_t j = 0; j < dim; j++) h = (h ^ canon_bits(x[j])) * 0x100000001b3ULL;
    return fed_mix64(h);
}

static bool rows_equal(const float *a, const float *b, size_t dim) {
    for (size_t j = 0; j < dim; j++)
        if (canon_bits(a[j]) != canon_bits(b[j])) return false;
    return true;
}

/* Open-addressing set of row indices keyed by (features) or (features, label). */
typedef struct rowset {
    size_t *row;    /* row index + 1, 0 = empty */
    uint64_t *hash; /* hash of the key in that slot */
    size_t mask;    /* slots - 1 */
} rowset;

/* True when a row equal to row i (and with its label when with_label) is in the set;
 * otherwise adds row i. */
static bool rowset_seen(rowset *s, const fed_dataset *d, size_t i, uint64_t h, bool with_label) {
    const float *xi = d->x + i * d->dim;
    for (size_t k = (size_t)h & s->mask;; k = (k + 1) & s->mask) {
        if (!s->row[k]) {
            s->row[k] = i + 1;
            s->hash[k] = h;
            return false;
        }
        size_t j = s->row[k] - 1;
        if (s->hash[k] == h && (!with_label || d->y[j] == d->y[i]) &&
            rows_equal(d->x + j * d->dim, xi, d->dim))
            return true;
    }
}

static fed_err report_dense(fed_data_report *r, const fed_dataset *d) {
    fed_err err = FED_ENOMEM;
    rowset a = {NULL, NULL, 0}, b = {NULL, NULL, 0};
    bool *varies = NULL;
    r->n = d->n;
    r->dim = d->dim;
    r->num_classes = d->num_classes;
    if (!(r->class_counts = fed_calloc(d->num_classes, sizeof(size_t)))) goto fail;
    for (size_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) {
            err = fed_errorf(FED_EINVAL, "report: label %d of row %zu is not a class id",
                             (int)d->y[i], i);
            goto fail;
        }
        r->class_counts[d->y[i]]++;
    }
    size_t lo = 0, hi = 0;
    for (size_t c = 0; c < d->num_classes; c++) {
        size_t k = r->class_counts[c];
        if (k == 0) {
            r->empty_classes++;
            continue;
        }
        if (lo == 0 || k < lo) lo = k;
        if (k > hi) hi = k;
    }
    r->imbalance = lo ? (double)hi / (double)lo : 0.0;

    size_t cells = d->n * d->dim;
    for (size_t i = 0; i < cells; i++) r->nonfinite += !isfinite(d->x[i]);
    if (d->n > 0) {
        if (!(varies = fed_calloc(d->dim, sizeof *varies))) goto fail;
        for (size_t i = 1; i < d->n; i++) {
            const float *xr = d->x + i * d->dim;
            for (size_t j = 0; j < d->dim; j++)
                varies[j] |= canon_bits(xr[j]) != canon_bits(d->x[j]);
        }
        for (size_t j = 0; j < d->dim; j++) r->constant_features += !varies[j];

        size_t slots = 16;
        while (slots < 2 * d->n) slots *= 2;
        a.mask = b.mask = slots - 1;
        if (!(a.row = fed_calloc(slots, sizeof *a.row)) ||
            !(a.hash = fed_mallocarray(slots, sizeof *a.hash)) ||
            !(b.row = fed_calloc(slots, sizeof *b.row)) ||
            !(b.hash = fed_mallocarray(slots, sizeof *b.hash)))
            goto fail;
        for (size_t i = 0; i < d->n; i++) {
            uint64_t hf = row_hash(d->x + i * d->dim, d->dim);
            uint64_t hl = fed_mix64(hf ^ (uint64_t)(uint32_t)d->y[i]);
            bool same_features = rowset_seen(&a, d, i, hf, false);
            bool same_both = rowset_seen(&b, d, i, hl, true);
            if (same_both)
                r->duplicates++;
            else if (same_features)
                r->conflicts++;
        }
    }
    err = FED_OK;
fail:
    fed_free(varies);
    fed_free(a.row);
    fed_free(a.hash);
    fed_free(b.row);
    fed_free(b.hash);
    if (err) fed_data_report_free(r);
    return err;
}

fed_err fed_data_report_new(fed_data_report *r, const fed_dataset *d) {
    memset(r, 0, sizeof *r);
    const fed_dataset *v = NULL;
    fed_dataset *tmp = NULL;
    fed_err err = fed_data_floats(d, &v, &tmp);
    if (!err) err = report_dense(r, v);
    fed_data_destroy(&tmp);
    return err;
}

void fed_data_report_free(fed_data_report *r) {
    if (!r) return;
    fed_free(r->class_counts);
    memset(r, 0, sizeof *r);
}

/* ---- subsets and splits -------------------------------------------------------------- */

fed_err fed_data_clone(fed_dataset **out, const fed_dataset *d) {
    size_t *idx = fed_mallocarray(d->n ? d->n : 1, sizeof *idx);
    if (!idx) return FED_ENOMEM;
    for (size_t i = 0; i < d->n; i++) idx[i] = i;
    fed_err err = fed_data_subset(out, d, idx, d->n);
    fed_free(idx);
    return err;
}

fed_err fed_data_subset(fed_dataset **out, const fed_dataset *d, const size_t *idx, size_t k) {
    *out = NULL;
    for (size_t i = 0; i < k; i++)
        if (idx[i] >= d->n)
            return fed_errorf(FED_EINVAL, "subset: index %zu is not below %zu", idx[i], d->n);
    fed_dataset *s = NULL;
    fed_err err = data_alloc(&s, k, d->dim, d->num_classes, d->x != NULL);
    if (err || !s) return err;
    if (!d->x && (err = fed__bytes_share(s, d, idx, k))) {
        fed_data_destroy(&s);
        return err;
    }
    s->shape = d->shape;
    if (d->class_names) {
        if (!(s->class_names = fed_calloc(d->num_classes, sizeof(char *)))) goto oom;
        for (size_t c = 0; c < d->num_classes; c++)
            if (!(s->class_names[c] = fed_strdup(d->class_names[c]))) goto oom;
    }
    fed_data_gather(d, idx, k, s->x, s->y);
    *out = s;
    return FED_OK;
oom:
    fed_data_destroy(&s);
    return FED_ENOMEM;
}

fed_err fed_data_split(const fed_dataset *d, double val_frac, double test_frac, uint64_t seed,
                       fed_dataset **train, fed_dataset **val, fed_dataset **test) {
    *train = NULL;
    if (val) *val = NULL;
    if (test) *test = NULL;
    if (!(val_frac >= 0.0 && val_frac < 1.0) || !(test_frac >= 0.0 && test_frac < 1.0) ||
        !(val_frac + test_frac < 1.0))
        return fed_errorf(FED_EINVAL,
                          "split: validation %g and test %g must each be in [0, 1) and sum "
                          "below 1",
                          val_frac, test_frac);
    if ((val_frac > 0.0 && !val) || (test_frac > 0.0 && !test))
        return fed_errorf(FED_EINVAL, "split: a non-zero fraction needs somewhere to go");
    const size_t n = d->n, nc = d->num_classes;
    for (size_t i = 0; i < n; i++)
        if (d->y[i] < 0 || (size_t)d->y[i] >= nc)
            return fed_errorf(FED_EINVAL, "split: label %d of row %zu is not a class id",
                              (int)d->y[i], i);
    fed_err err = FED_ENOMEM;
    size_t *start = fed_calloc(nc + 1, sizeof *start);
    size_t *perm = fed_mallocarray(n, sizeof *perm);
    unsigned char *part = fed_mallocarray(n, 1);
    fed_dataset *parts[3] = {NULL, NULL, NULL};
    if (!start || !perm || !part) goto fail;

    /* Counting sort by class, keeping file order within a class. */
    for (size_t i = 0; i < n; i++) start[d->y[i] + 1]++;
    for (size_t c = 0; c < nc; c++) start[c + 1] += start[c];
    for (size_t i = 0; i < n; i++) perm[start[d->y[i]]++] = i;
    for (size_t c = nc; c > 0; c--) start[c] = start[c - 1];
    start[0] = 0;

    fed_rng rng;
    fed_rng_seed(&rng, seed);
    for (size_t c = 0; c < nc; c++) {
        size_t m = start[c + 1] - start[c];
        if (m == 0) continue;
        size_t *ix = perm + start[c];
        fed_rng_shuffle(&rng, ix, m);
        size_t nv = (size_t)floor((double)m * val_frac + 0.5);
        size_t nt = (size_t)floor((double)m * test_frac + 0.5);
        while (nv + nt >= m) { /* train keeps at least one: test gives back first */
            if (nt >= nv && nt > 0)
                nt--;
            else
                nv--;
        }
        for (size_t i = 0; i < m; i++) part[ix[i]] = i < nv ? 1 : i < nv + nt ? 2 : 0;
    }
    /* Each part in file order. */
    for (int p = 0; p < 3; p++) {
        if ((p == 1 && !val) || (p == 2 && !test)) continue;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (part[i] == p) perm[k++] = i;
        if ((err = fed_data_subset(&parts[p], d, perm, k))) goto fail;
    }
    *train = parts[0];
    if (val) *val = parts[1];
    if (test) *test = parts[2];
    err = FED_OK;
    goto done;
fail:
    for (int p = 0; p < 3; p++) fed_data_destroy(&parts[p]);
done:
    fed_free(start);
    fed_free(perm);
    fed_free(part);
    return err;
}

/* ---- standardisation ----------------------------------------------------------------- */

static fed_err std_new(fed_standardizer **out, size_t dim, size_t len) {
    *out = NULL;
    fed_standardizer *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    s->dim = dim;
    s->len = len;
    s->mean = fed_mallocarray(len, sizeof(float));
    s->std = fed_mallocarray(len, sizeof(float));
    if (!s->mean || !s->std) {
        fed_std_destroy(&s);
        return FED_ENOMEM;
    }
    *out = s;
    return FED_OK;
}

size_t fed_std_groups(const fed_shape *shape, size_t dim) {
    return shape->ndim == 3 ? shape->d[0] : dim;
}

fed_err fed_std_moments(const fed_dataset *d, size_t len, double *mean, double *var) {
    if (d->n == 0) return fed_errorf(FED_EINVAL, "standardizer: cannot fit on an empty set");
    if (len == 0 || d->dim % len != 0)
        return fed_errorf(FED_ESHAPE, "standardizer: %zu features in %zu groups", d->dim, len);
    size_t per = d->dim / len;
    float *buf = d->x ? NULL : fed_mallocarray(d->dim, sizeof(float));
    if (!d->x && !buf) return FED_ENOMEM;
    for (size_t g = 0; g < len; g++) mean[g] = var[g] = 0.0;
    /* Two passes in double: the mean, then squared deviations (population variance). */
    for (size_t i = 0; i < d->n; i++) {
        const float *xr = fed_data_row(d, i, buf);
        for (size_t j = 0; j < d->dim; j++) mean[j / per] += (double)xr[j];
    }
    double count = (double)d->n * (double)per;
    for (size_t g = 0; g < len; g++) mean[g] /= count;
    for (size_t i = 0; i < d->n; i++) {
        const float *xr = fed_data_row(d, i, buf);
        for (size_t j = 0; j < d->dim; j++) {
            double e = (double)xr[j] - mean[j / per];
            var[j / per] += e * e;
        }
    }
    for (size_t g = 0; g < len; g++) var[g] /= count;
    fed_free(buf);
    return FED_OK;
}

fed_err fed_std_from_moments(fed_standardizer **out, size_t dim, size_t len, const double *mean,
                             const double *var) {
    *out = NULL;
    if (len == 0 || dim % len != 0)
        return fed_errorf(FED_EINVAL, "standardizer: %zu features in %zu groups", dim, len);
    for (size_t g = 0; g < len; g++)
        if (!isfinite(mean[g]) || !(var[g] >= 0.0 && isfinite(var[g])))
            return fed_errorf(FED_EINVAL, "standardizer: group %zu: mean %g, variance %g", g,
                              mean[g], var[g]);
    fed_standardizer *s = NULL;
    fed_err err = std_new(&s, dim, len);
    if (err) return err;
    for (size_t g = 0; g < len; g++) {
        double sd = sqrt(var[g]);
        s->mean[g] = (float)mean[g];
        s->std[g] = sd < 1e-12 ? 1.0f : (float)sd;
    }
    *out = s;
    return FED_OK;
}

fed_err fed_std_fit(fed_standardizer **out, const fed_dataset *d) {
    *out = NULL;
    if (d->n == 0) return fed_errorf(FED_EINVAL, "standardizer: cannot fit on an empty set");
    /* Per channel for images: feature j belongs to channel j / (H * W). */
    size_t len = fed_std_groups(&d->shape, d->dim);
    double *acc = fed_calloc(2 * (len ? len : 1), sizeof *acc);
    if (!acc) return FED_ENOMEM;
    fed_err err = fed_std_moments(d, len, acc, acc + len);
    if (!err) err = fed_std_from_moments(out, d->dim, len, acc, acc + len);
    fed_free(acc);
    return err;
}

fed_err fed_std_apply(const fed_standardizer *s, fed_dataset *d) {
    if (d->dim != s->dim)
        return fed_errorf(FED_ESHAPE, "standardizer: fitted on %zu features, data has %zu", s->dim,
                          d->dim);
    if (!d->x) return fed__bytes_std(s, d);
    size_t per = s->dim / s->len;
    for (size_t i = 0; i < d->n; i++) {
        float *xr = d->x + i * d->dim;
        for (size_t j = 0; j < d->dim; j++) xr[j] = (xr[j] - s->mean[j / per]) / s->std[j / per];
    }
    return FED_OK;
}

void fed_std_destroy(fed_standardizer **s) {
    if (!s || !*s) return;
    fed_free((*s)->mean);
    fed_free((*s)->std);
    fed_free(*s);
    *s = NULL;
}

/* The shortest of %.6g..%.9g that reads back as f, as a double for cJSON. */
static double float_for_json(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static bool add_floats(cJSON *root, const char *key, const float *v, size_t n) {
    cJSON *arr = cJSON_AddArrayToObject(root, key);
    if (!arr) return false;
    for (size_t i = 0; i < n; i++) {
        cJSON *num = cJSON_CreateNumber(float_for_json(v[i]));
        if (!num || !cJSON_AddItemToArray(arr, num)) {
            cJSON_Delete(num);
            return false;
        }
    }
    return true;
}

fed_err fed_std_to_json(const fed_standardizer *s, char **json) {
    *json = NULL;
    fed_err err = FED_ENOMEM;
    char *text = NULL;
    fed_json_hooks();
    cJSON *root = cJSON_CreateObject();
    if (!root || !cJSON_AddNumberToObject(root, "dim", (double)s->dim) ||
        !add_floats(root, "mean", s->mean, s->len) || !add_floats(root, "std", s->std, s->len))
        goto fail;
    if (!(text = cJSON_PrintUnformatted(root))) goto fail;
    if ((*json = fed_strdup(text))) err = FED_OK;
fail:
    if (err) fed_errorf(err, "out of memory writing the standardizer as JSON");
    cJSON_free(text);
    cJSON_Delete(root);
    return err;
}

/* A JSON array of n finite floats (positive when positive) into v. */
static fed_err get_floats(const cJSON *arr, const char *key, bool positive, float *v) {
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        float f = cJSON_IsNumber(it) ? (float)it->valuedouble : NAN;
        if (!isfinite(f) || (positive && !(f > 0.0f)))
            return fed_errorf(FED_EFORMAT, "standardizer: %s[%zu] must be a finite%s number", key,
                              i, positive ? ", positive" : "");
        v[i] = f;
    }
    return FED_OK;
}

fed_err fed_std_from_json(fed_standardizer **out, const char *json) {
    *out = NULL;
    fed_err err = FED_EFORMAT;
    fed_standardizer *s = NULL;
    fed_json_hooks();
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "out of memory reading JSON");
        return fed_errorf(FED_EFORMAT, "standardizer: invalid JSON");
    }
    if (!cJSON_IsObject(root)) {
        fed_errorf(err, "standardizer: expected an object {\"dim\", \"mean\", \"std\"}");
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "dim") != 0 && strcmp(it->string, "mean") != 0 &&
            strcmp(it->string, "std") != 0) {
            fed_errorf(err, "standardizer: unknown field \"%s\"", it->string);
            goto done;
        }
    }
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(root, "dim");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(root, "mean");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(root, "std");
    double dd = cJSON_IsNumber(jd) ? jd->valuedouble : 0.0;
    if (!(dd >= 1.0 && dd <= (double)FED_MAX_DIM_SIZE && dd == floor(dd))) {
        fed_errorf(err, "standardizer: \"dim\" must be an integer in [1, %zu]", FED_MAX_DIM_SIZE);
        goto done;
    }
    size_t dim = (size_t)dd;
    int lm = cJSON_IsArray(jm) ? cJSON_GetArraySize(jm) : -1;
    int ls = cJSON_IsArray(js) ? cJSON_GetArraySize(js) : -1;
    if (lm < 1 || lm != ls || (size_t)lm > dim || dim % (size_t)lm != 0) {
        fed_errorf(err,
                   "standardizer: \"mean\" and \"std\" must be arrays of the same length, %zu "
                   "or a divisor of it (per channel)",
                   dim);
        goto done;
    }
    if ((err = std_new(&s, dim, (size_t)lm))) goto done;
    if ((err = get_floats(jm, "mean", false, s->mean)) ||
        (err = get_floats(js, "std", true, s->std)))
        goto done;
    *out = s;
    s = NULL;
done:
    fed_std_destroy(&s);
    cJSON_Delete(root);
    return err;
}

/* ---- batches and augmentation -------------------------------------------------------- */

void fed_data_order(size_t *order, size_t n, fed_rng *rng) {
    for (size_t i = 0; i < n; i++) order[i] = i;
    if (rng) fed_rng_shuffle(rng, order, n);
}

void fed_data_gather(const fed_dataset *d, const size_t *idx, size_t k, float *x, int32_t *y) {
    for (size_t i = 0; i < k; i++) {
        assert(idx[i] < d->n);
        y[i] = d->y[idx[i]];
    }
    if (!d->x) { /* a byte set */
        if (x) fed__bytes_gather(d, idx, k, x);
        return;
    }
    for (size_t i = 0; i < k; i++)
        memcpy(x + i * d->dim, d->x + idx[i] * d->dim, d->dim * sizeof(float));
}

bool fed_augment_is_identity(const fed_augment *a) {
    return a->noise_std == 0.0f && a->shift == 0 && !a->hflip;
}

/* x (C, H, W) translated by (dy, dx) with zero fill; scratch holds a copy. */
static void shift_image(float *x, const fed_shape *s, ptrdiff_t dy, ptrdiff_t dx, float *scratch) {
    const size_t C = s->d[0], H = s->d[1], W = s->d[2];
    memcpy(scratch, x, C * H * W * sizeof(float));
    for (size_t c = 0; c < C; c++) {
        const float *src = scratch + c * H * W;
        float *dst = x + c * H * W;
        for (size_t i = 0; i < H; i++) {
            ptrdiff_t si = (ptrdiff_t)i - dy;
            for (size_t j = 0; j < W; j++) {
                ptrdiff_t sj = (ptrdiff_t)j - dx;
                bool in = si >= 0 && si < (ptrdiff_t)H && sj >= 0 && sj < (ptrdiff_t)W;
                dst[i * W + j] = in ? src[(size_t)si * W + (size_t)sj] : 0.0f;
            }
        }
    }
}

static void hflip_image(float *x, const fed_shape *s) {
    const size_t C = s->d[0], H = s->d[1], W = s->d[2];
    for (size_t r = 0; r < C * H; r++) {
        float *row = x + r * W;
        for (size_t j = 0; j < W / 2; j++) {
            float t = row[j];
            row[j] = row[W - 1 - j];
            row[W - 1 - j] = t;
        }
    }
}

void fed_augment_batch(float *x, size_t k, const fed_shape *shape, const fed_augment *a,
                       fed_rng *rng, float *scratch) {
    const size_t numel = fed_shape_numel(shape);
    assert(!(a->shift || a->hflip) || shape->ndim == 3);
    size_t sh = a->shift;
    if (shape->ndim == 3) { /* beyond the image everything is fill anyway */
        size_t most = shape->d[1] > shape->d[2] ? shape->d[1] : shape->d[2];
        if (sh > most) sh = most;
    }
    for (size_t e = 0; e < k; e++) {
        float *ex = x + e * numel;
        /* Per example, in this order: dy, dx, the flip coin, then the noise. */
        if (sh) {
            ptrdiff_t dy = (ptrdiff_t)fed_rng_below(rng, 2 * sh + 1) - (ptrdiff_t)sh;
            ptrdiff_t dx = (ptrdiff_t)fed_rng_below(rng, 2 * sh + 1) - (ptrdiff_t)sh;
            if (dy || dx) shift_image(ex, shape, dy, dx, scratch);
        }
        if (a->hflip && (fed_rng_u64(rng) >> 63)) hflip_image(ex, shape);
        if (a->noise_std != 0.0f)
            for (size_t j = 0; j < numel; j++) ex[j] += a->noise_std * fed_rng_normal(rng);
    }
}

fed_err fed_data_split_names(const char *list, const char *what, char ***names, size_t *n) {
    *names = NULL;
    *n = 0;
    size_t k = 1, len = strlen(list);
    for (const char *p = list; *p; p++) k += *p == ',';
    char **v = fed_malloc(k * sizeof *v + len + 1);
    if (!v) return FED_ENOMEM;
    char *text = (char *)(v + k);
    memcpy(text, list, len + 1);
    size_t i = 0;
    for (char *p = text;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (!*p) {
            fed_free(v);
            return fed_errorf(FED_EINVAL, "%s: empty name in \"%s\"", what, list);
        }
        v[i++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    *names = v;
    *n = i;
    return FED_OK;
}
