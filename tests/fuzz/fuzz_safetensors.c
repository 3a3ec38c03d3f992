/* libFuzzer target for the safetensors reader: any bytes either parse into a file whose
 * tensors tile the data section exactly, or fail with FED_EFORMAT / FED_EUNSUPPORTED.
 * A parsed file is converted to float32 tensor by tensor, re-encoded with the writer
 * and parsed again: names, shapes, metadata and every value's bits must survive. Never a
 * crash, never an allocation beyond a small multiple of the input size. */
#include "core/alloc.h"
#include "core/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t dtype_size[] = {4, 2, 2};

/* Checks f's invariants; returns its tensors as float32 (one block, caller frees). */
static float *check_file(const fed_st_file *f, size_t data_len, size_t *total_out) {
    size_t n = fed_st_count(f), total = 0;
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const fed_st_tensor *t = fed_st_at(f, i);
        uint64_t numel = 1;
        if (t->ndim < 0 || t->ndim > FED_ST_MAX_DIMS || (unsigned)t->dtype > FED_ST_BF16) abort();
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        if (numel != t->numel || t->begin != at ||
            t->end - t->begin != numel * dtype_size[t->dtype])
            abort();
        if (fed_st_find(f, t->name) != t) abort();
        at = t->end;
        total += (size_t)numel;
    }
    if (at != data_len || fed_st_at(f, n) != NULL) abort();
    float *vals = malloc((total ? total : 1) * sizeof *vals);
    if (!vals) abort();
    for (size_t i = 0, off = 0; i < n; i++) {
        fed_st_copy_f32(f, fed_st_at(f, i), vals + off);
        off += (size_t)fed_st_at(f, i)->numel;
    }
    *total_out = total;
    return vals;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fed_st_file *f = NULL, *g = NULL;
    fed_err err = fed_st_parse(&f, data, size, "fuzz");
    if (err) {
        if (err != FED_EFORMAT && err != FED_EUNSUPPORTED) abort();
        if (f) abort();
        return 0;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
    size_t total = 0, n = fed_st_count(f);
    float *vals = check_file(f, size - 8 - (size_t)hlen, &total);

    /* Re-encode as F32 (the writer refuses empty names only) and read back. */
    fed_st_entry *e = calloc(n ? n : 1, sizeof *e);
    size_t *shapes = calloc((n ? n : 1) * FED_ST_MAX_DIMS, sizeof *shapes);
    if (!e || !shapes) abort();
    bool empty_name = false;
    for (size_t i = 0, off = 0; i < n; i++) {
        const fed_st_tensor *t = fed_st_at(f, i);
        for (int d = 0; d < t->ndim; d++) shapes[i * FED_ST_MAX_DIMS + d] = (size_t)t->shape[d];
        e[i] = (fed_st_entry){t->name, t->ndim, shapes + i * FED_ST_MAX_DIMS, vals + off};
        off += (size_t)t->numel;
        empty_name |= t->name[0] == '\0';
    }
    void *buf = NULL;
    size_t len = 0;
    err = fed_st_encode(&buf, &len, e, n, fed_st_meta(f));
    if (empty_name) {
        if (err != FED_EINVAL) abort();
    } else {
        if (err) abort();
        if (fed_st_parse(&g, buf, len, "re-encoded") != FED_OK) abort();
        size_t total2 = 0;
        uint64_t hlen2 = 0;
        for (int i = 7; i >= 0; i--) hlen2 = hlen2 << 8 | ((const uint8_t *)buf)[i];
        if ((8 + hlen2) % 8 != 0) abort();
        float *vals2 = check_file(g, len - 8 - (size_t)hlen2, &total2);
        if (fed_st_count(g) != n || total2 != total || memcmp(vals, vals2, total * sizeof *vals))
            abort();
        for (size_t i = 0; i < n; i++) {
            const fed_st_tensor *a = fed_st_at(f, i), *b = fed_st_at(g, i);
            if (b->dtype != FED_ST_F32 || b->ndim != a->ndim || strcmp(a->name, b->name) != 0 ||
                memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) != 0)
                abort();
        }
        const fed_meta *ma = fed_st_meta(f), *mb = fed_st_meta(g);
        if (fed_meta_count(ma) != fed_meta_count(mb)) abort();
        for (size_t i = 0; i < fed_meta_count(ma); i++)
            if (strcmp(fed_meta_key(ma, i), fed_meta_key(mb, i)) != 0 ||
                strcmp(fed_meta_value(ma, i), fed_meta_value(mb, i)) != 0)
                abort();
        free(vals2);
    }
    fed_free(buf);
    free(e);
    free(shapes);
    free(vals);
    fed_st_close(&g);
    fed_st_close(&f);
    return 0;
}
