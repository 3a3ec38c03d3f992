/* Byte sets (dataset.h): images whose values are bytes kept as bytes in one refcounted
 * store that every subset shares, each set holding only its row list, labels and the
 * 256-entry table per standardisation group that turns a byte into the float a float
 * set would hold. The float of a feature is computed once per byte value by the very
 * expressions of the float path (the IDX loader's b / 255.0f, fed_std_apply's
 * (x - mean) / std), so a byte set reads bit for bit as its float twin. */
#include "dataset/data_internal.h"
#include "dataset/dataset.h"

#include "core/alloc.h"

#include <stdatomic.h>
#include <string.h>

struct fed_data_bytes {
    atomic_size_t refs;
    size_t rows, dim;
    uint8_t *data; /* (rows, dim) */
};

static void store_release(fed_data_bytes *b) {
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
    fed_free(b->data);
    fed_free(b);
}

void fed__bytes_release(fed_dataset *d) {
    store_release(d->bytes);
    fed_free(d->rows);
    fed_free(d->lut);
    d->bytes = NULL;
    d->rows = NULL;
    d->lut = NULL;
    d->lut_groups = 0;
}

fed_err fed__bytes_new(fed_dataset **out, const uint8_t *src, size_t n, size_t dim,
                       size_t num_classes) {
    *out = NULL;
    size_t cells;
    if (dim == 0 || num_classes == 0 || num_classes > FED_DATA_MAX_CLASSES)
        return fed_errorf(FED_EINVAL, "data set: %zu features, %zu classes", dim, num_classes);
    if (n > UINT32_MAX || !fed_mul_ok(n, dim, &cells))
        return fed_errorf(FED_ENOMEM, "data set: too large for a byte set");
    fed_dataset *d = fed_calloc(1, sizeof *d);
    fed_data_bytes *b = fed_calloc(1, sizeof *b);
    if (!d || !b) {
        fed_free(d);
        fed_free(b);
        return FED_ENOMEM;
    }
    atomic_init(&b->refs, 1);
    b->rows = n;
    b->dim = dim;
    d->bytes = b;
    d->n = n;
    d->dim = dim;
    d->shape.ndim = 1;
    d->shape.d[0] = dim;
    d->num_classes = num_classes;
    d->lut_groups = 1;
    b->data = fed_malloc(cells ? cells : 1);
    d->y = fed_calloc(n ? n : 1, sizeof(int32_t));
    d->rows = fed_mallocarray(n ? n : 1, sizeof(uint32_t));
    d->lut = fed_mallocarray(256, sizeof(float));
    if (!b->data || !d->y || !d->rows || !d->lut) {
        fed_data_destroy(&d);
        return FED_ENOMEM;
    }
    if (cells) memcpy(b->data, src, cells);
    for (size_t i = 0; i < n; i++) d->rows[i] = (uint32_t)i;
    for (unsigned v = 0; v < 256; v++) d->lut[v] = (float)v / 255.0f; /* the IDX loader's */
    *out = d;
    return FED_OK;
}

fed_err fed__bytes_share(fed_dataset *s, const fed_dataset *d, const size_t *idx, size_t k) {
    s->rows = fed_mallocarray(k ? k : 1, sizeof(uint32_t));
    s->lut = fed_mallocarray(d->lut_groups * 256, sizeof(float));
    if (!s->rows || !s->lut) return FED_ENOMEM;
    for (size_t i = 0; i < k; i++) s->rows[i] = d->rows[idx[i]];
    memcpy(s->lut, d->lut, d->lut_groups * 256 * sizeof(float));
    s->lut_groups = d->lut_groups;
    atomic_fetch_add(&d->bytes->refs, 1);
    s->bytes = d->bytes;
    return FED_OK;
}

/* Row r of the store through d's table into x (dim floats). */
static void convert(const fed_dataset *d, uint32_t r, float *x) {
    const uint8_t *b = d->bytes->data + (size_t)r * d->dim;
    if (d->lut_groups == 1) {
        for (size_t j = 0; j < d->dim; j++) x[j] = d->lut[b[j]];
        return;
    }
    size_t per = d->dim / d->lut_groups;
    for (size_t g = 0, j = 0; g < d->lut_groups; g++) {
        const float *t = d->lut + g * 256;
        for (size_t e = j + per; j < e; j++) x[j] = t[b[j]];
    }
}

const float *fed_data_row(const fed_dataset *d, size_t i, float *buf) {
    if (d->x) return d->x + i * d->dim;
    convert(d, d->rows[i], buf);
    return buf;
}

void fed__bytes_gather(const fed_dataset *d, const size_t *idx, size_t k, float *x) {
    for (size_t i = 0; i < k; i++) convert(d, d->rows[idx[i]], x + i * d->dim);
}

fed_err fed_data_densify(fed_dataset *d) {
    if (d->x) return FED_OK;
    size_t cells;
    if (!fed_mul_ok(d->n, d->dim, &cells)) return fed_errorf(FED_ENOMEM, "data set: too large");
    float *x = fed_aligned_alloc(cells ? cells : 1, sizeof(float));
    if (!x) return FED_ENOMEM;
    for (size_t i = 0; i < d->n; i++) convert(d, d->rows[i], x + i * d->dim);
    fed__bytes_release(d);
    d->x = x;
    return FED_OK;
}

fed_err fed_data_floats(const fed_dataset *d, const fed_dataset **view, fed_dataset **tmp) {
    *tmp = NULL;
    *view = d;
    if (d->x) return FED_OK;
    fed_err err = fed_data_clone(tmp, d);
    if (!err) err = fed_data_densify(*tmp);
    if (err) {
        fed_data_destroy(tmp);
        return err;
    }
    *view = *tmp;
    return FED_OK;
}

fed_err fed__bytes_std(const fed_standardizer *s, fed_dataset *d) {
    size_t old = d->lut_groups;
    if (old != 1 && old != s->len) { /* groups that do not nest: floats */
        fed_err err = fed_data_densify(d);
        return err ? err : fed_std_apply(s, d);
    }
    float *lut = fed_mallocarray(s->len * 256, sizeof(float));
    if (!lut) return FED_ENOMEM;
    for (size_t g = 0; g < s->len; g++) {
        const float *t = d->lut + (old == 1 ? 0 : g) * 256;
        for (unsigned v = 0; v < 256; v++) lut[g * 256 + v] = (t[v] - s->mean[g]) / s->std[g];
    }
    fed_free(d->lut);
    d->lut = lut;
    d->lut_groups = s->len;
    return FED_OK;
}
