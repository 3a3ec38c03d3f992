/* The update codecs of core/codec.h: half floats, blockwise stochastic quantization,
 * top-k, their stream layout, and the strict decoder. Nothing here allocates more than
 * the encoder's top-k scratch; the decoder allocates nothing and reads no field before
 * the stream's exact length has been checked. */
#include "core/codec.h"

#include "core/alloc.h"
#include "core/endian.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ---- scalar conversions (F. Giesen's float_to_half_fast3_rtne and half_to_float) ---- */

uint16_t fed_f32_to_f16(float f) {
    const uint32_t f16max = (uint32_t)(127 + 16) << 23; /* 65536: rounds to Inf */
    const uint32_t magic = (uint32_t)((127 - 15) + (23 - 10) + 1) << 23;
    uint32_t u = bits_of(f);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint16_t o;
    if (u >= f16max) {
        o = u > 0x7f800000u ? 0x7e00 : 0x7c00;
    } else if (u < (uint32_t)113 << 23) { /* subnormal or zero: the FPU rounds for us */
        o = (uint16_t)(bits_of(float_of(u) + float_of(magic)) - magic);
    } else {
        uint32_t odd = (u >> 13) & 1;
        u += ((uint32_t)(15 - 127) << 23) + 0xfff + odd;
        o = (uint16_t)(u >> 13);
    }
    return (uint16_t)(o | sign >> 16);
}

float fed_f16_to_f32(uint16_t h) {
    const uint32_t shifted = 0x7c00u << 13;
    uint32_t o = (uint32_t)(h & 0x7fff) << 13;
    uint32_t e = o & shifted;
    o += (uint32_t)(127 - 15) << 23;
    if (e == shifted) {
        o += (uint32_t)(128 - 16) << 23; /* Inf or NaN */
    } else if (e == 0) {                 /* subnormal */
        o += 1u << 23;
        o = bits_of(float_of(o) - float_of((uint32_t)113 << 23));
    }
    return float_of(o | (uint32_t)(h & 0x8000) << 16);
}

uint16_t fed_f32_to_bf16(float x) {
    uint32_t u = bits_of(x);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float fed_bf16_to_f32(uint16_t h) {
    return float_of((uint32_t)h << 16);
}

/* ---- names ------------------------------------------------------------------------------ */

static const char *const dense_names[] = {"f32", "fp16", "bf16", "q8", "q4"};

static int dense_of(const char *s, size_t len) {
    for (int i = 1; i <= FED_CODEC_Q4; i++)
        if (strlen(dense_names[i]) == len && memcmp(s, dense_names[i], len) == 0) return i;
    return -1;
}

#define FORMS "none, fp16, bf16, q8, q4, topk:F or topk:F+fp16|bf16|q8|q4 with F in (0, 1]"

fed_err fed_codec_parse(fed_codec *out, const char *text) {
    fed_codec c = {FED_CODEC_F32, FED_CODEC_F32, 0.0};
    if (!text) text = "";
    int d;
    if (strcmp(text, "none") == 0) {
        /* c is "none" */
    } else if ((d = dense_of(text, strlen(text))) > 0) {
        c.id = (fed_codec_id)d;
    } else if (strncmp(text, "topk:", 5) == 0) {
        const char *f = text + 5, *plus = strchr(f, '+');
        char num[32];
        size_t flen = plus ? (size_t)(plus - f) : strlen(f);
        char *end = NULL;
        if (flen == 0 || flen >= sizeof num)
            return fed_errorf(FED_EINVAL,
                              "compression codec \"%s\": the fraction F is missing; "
                              "the codecs are " FORMS,
                              text);
        memcpy(num, f, flen);
        num[flen] = '\0';
        c.fraction = strtod(num, &end);
        if (*end || !(c.fraction > 0.0 && c.fraction <= 1.0))
            return fed_errorf(FED_EINVAL,
                              "compression codec \"%s\": fraction \"%s\" is not in (0, 1]; the "
                              "codecs are " FORMS,
                              text, num);
        c.id = FED_CODEC_TOPK;
        if (plus && (d = dense_of(plus + 1, strlen(plus + 1))) <= 0)
            return fed_errorf(FED_EINVAL,
                              "compression codec \"%s\": unknown value codec \"%s\"; the codecs "
                              "are " FORMS,
                              text, plus + 1);
        if (plus) c.values = (fed_codec_id)d;
    } else {
        return fed_errorf(FED_EINVAL, "unknown compression codec \"%s\"; the codecs are " FORMS,
                          text);
    }
    *out = c;
    return FED_OK;
}

void fed_codec_name(const fed_codec *c, char buf[FED_CODEC_NAME]) {
    if (c->id == FED_CODEC_TOPK)
        snprintf(buf, FED_CODEC_NAME, "topk:%.6g%s%s", c->fraction,
                 c->values != FED_CODEC_F32 ? "+" : "",
                 c->values != FED_CODEC_F32 ? dense_names[c->values] : "");
    else if (c->id > FED_CODEC_F32 && c->id <= FED_CODEC_Q4)
        snprintf(buf, FED_CODEC_NAME, "%s", dense_names[c->id]);
    else
        snprintf(buf, FED_CODEC_NAME, "none");
}

int fed_codec_on(const fed_codec *c) {
    return c->id != FED_CODEC_F32;
}

/* ---- sizes ------------------------------------------------------------------------------ */

static size_t blocks_of(size_t k) {
    return (k + FED_CODEC_BLOCK - 1) / FED_CODEC_BLOCK;
}

/* Bytes of k values in the dense codec id. */
static size_t values_size(fed_codec_id id, size_t k) {
    switch (id) {
    case FED_CODEC_F16:
    case FED_CODEC_BF16:
        return 2 * k;
    case FED_CODEC_Q8:
        return 8 * blocks_of(k) + k;
    case FED_CODEC_Q4:
        return 8 * blocks_of(k) + (k + 1) / 2;
    default:
        return 4 * k;
    }
}

static size_t stream_size(fed_codec_id id, fed_codec_id values, size_t k) {
    if (id == FED_CODEC_TOPK) return FED_CODEC_HEADER + 4 * k + values_size(values, k);
    return FED_CODEC_HEADER + values_size(id, k);
}

size_t fed_codec_kept(const fed_codec *c, size_t n) {
    if (c->id != FED_CODEC_TOPK || n == 0) return n;
    double k = ceil(c->fraction * (double)n - 1e-9);
    if (k < 1) return 1;
    return k >= (double)n ? n : (size_t)k;
}

size_t fed_codec_size(const fed_codec *c, size_t n) {
    if (!fed_codec_on(c)) return 0;
    return stream_size(c->id, c->values, fed_codec_kept(c, n));
}

/* ---- encoding --------------------------------------------------------------------------- */

/* splitmix64 as a stream: two 24-bit uniforms a call. */
typedef struct coins {
    uint64_t s, have;
    unsigned left;
} coins;

static float coin(coins *r) {
    if (!r->left) {
        uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        r->have = z ^ (z >> 31);
        r->left = 2;
    }
    r->left--;
    float u = (float)(r->have >> 40) * 0x1p-24f;
    r->have <<= 32;
    return u;
}

/* Whether the block (lo, step) of L levels decodes to finite floats only. */
static int scale_ok(float lo, float step, int levels) {
    return isfinite(lo) && isfinite(step) && step >= 0.0f &&
           isfinite(lo + (float)(levels - 1) * step);
}

/* k values v into q8/q4 blocks at out; sent (may alias v, or NULL): the decoded values. */
static fed_err quantize(const float *v, size_t k, int levels, uint64_t seed, uint8_t *out,
                        float *sent) {
    size_t nb = blocks_of(k);
    uint8_t *codes = out + 8 * nb;
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * FED_CODEC_BLOCK, i1 = i0 + FED_CODEC_BLOCK < k ? i0 + FED_CODEC_BLOCK : k;
        float lo = v[i0], hi = v[i0];
        for (size_t i = i0 + 1; i < i1; i++) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
        }
        float step = (hi - lo) / (float)(levels - 1);
        if (!scale_ok(lo, step, levels))
            return fed_errorf(FED_ERANGE, "quantization block %zu: range [%g, %g] overflows", b,
                              (double)lo, (double)hi);
        fed_store_le32(out + 8 * b, bits_of(lo));
        fed_store_le32(out + 8 * b + 4, bits_of(step));
        /* A subnormal step has no finite inverse: divide instead (never NaN from 0 x Inf). */
        float inv = step > 0.0f ? 1.0f / step : 0.0f, top = (float)(levels - 1);
        int divide = !isfinite(inv);
        coins r = {fed_mix64(seed ^ fed_mix64(b + 1)), 0, 0};
        for (size_t i = i0; i < i1; i++) {
            float t = (divide ? (v[i] - lo) / step : (v[i] - lo) * inv) + coin(&r);
            unsigned q = t < top ? (unsigned)t : (unsigned)top;
            if (levels == 256)
                codes[i] = (uint8_t)q;
            else if (i & 1)
                codes[i / 2] = (uint8_t)(codes[i / 2] | q << 4);
            else
                codes[i / 2] = (uint8_t)q;
            if (sent) sent[i] = lo + (float)q * step;
        }
    }
    return FED_OK;
}

/* k values v in the dense codec id at out; sent: as quantize. */
static fed_err encode_values(fed_codec_id id, const float *v, size_t k, uint64_t seed, uint8_t *out,
                             float *sent) {
    switch (id) {
    case FED_CODEC_F16:
        for (size_t i = 0; i < k; i++) {
            if (!(fabsf(v[i]) < 65520.0f))
                return fed_errorf(FED_ERANGE, "fp16 cannot hold %g (value %zu): use bf16",
                                  (double)v[i], i);
            uint16_t h = fed_f32_to_f16(v[i]);
            fed_store_le16(out + 2 * i, h);
            if (sent) sent[i] = fed_f16_to_f32(h);
        }
        return FED_OK;
    case FED_CODEC_BF16:
        for (size_t i = 0; i < k; i++) {
            uint16_t h = fed_f32_to_bf16(v[i]);
            if ((h & 0x7f80) == 0x7f80)
                return fed_errorf(FED_ERANGE, "bf16 cannot hold %g (value %zu)", (double)v[i], i);
            fed_store_le16(out + 2 * i, h);
            if (sent) sent[i] = fed_bf16_to_f32(h);
        }
        return FED_OK;
    case FED_CODEC_Q8:
        return quantize(v, k, 256, seed, out, sent);
    case FED_CODEC_Q4:
        return quantize(v, k, 16, seed, out, sent);
    default:
        for (size_t i = 0; i < k; i++) {
            fed_store_le32(out + 4 * i, bits_of(v[i]));
            if (sent) sent[i] = v[i];
        }
        return FED_OK;
    }
}

/* The indices of the k floats of x of largest magnitude (ties: lower index first), in
 * increasing order, by a two-pass radix select on the magnitudes' bits (finite floats
 * >= 0 order as their bits do). hist: 65 536 counters of scratch. */
static void top_k(const float *x, size_t n, size_t k, uint32_t *hist, uint32_t *idx) {
    memset(hist, 0, 65536 * sizeof *hist);
    for (size_t i = 0; i < n; i++) hist[(bits_of(x[i]) & 0x7fffffffu) >> 16]++;
    size_t above = 0, t = 65535;
    while (above + hist[t] < k) above += hist[t--];
    memset(hist, 0, 65536 * sizeof *hist);
    for (size_t i = 0; i < n; i++) {
        uint32_t b = bits_of(x[i]) & 0x7fffffffu;
        if (b >> 16 == t) hist[b & 0xffff]++;
    }
    size_t l = 65535;
    while (above + hist[l] < k) above += hist[l--];
    uint32_t thr = (uint32_t)(t << 16 | l);
    size_t ties = k - above, j = 0; /* floats equal to thr that are kept */
    for (size_t i = 0; i < n && j < k; i++) {
        uint32_t b = bits_of(x[i]) & 0x7fffffffu;
        if (b > thr || (b == thr && ties && ties--)) idx[j++] = (uint32_t)i;
    }
}

fed_err fed_codec_encode(const fed_codec *c, const float *x, size_t n, uint64_t seed, uint8_t *out,
                         size_t out_len, float *sent) {
    if (!fed_codec_on(c)) return fed_errorf(FED_EINVAL, "codec none: nothing to encode");
    if (n > UINT32_MAX) return fed_errorf(FED_ERANGE, "%zu floats: the codecs take < 2^32", n);
    size_t k = fed_codec_kept(c, n), want = fed_codec_size(c, n);
    if (out_len != want)
        return fed_errorf(FED_EINVAL, "codec output of %zu bytes, the stream has %zu", out_len,
                          want);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return fed_errorf(FED_ENONFINITE, "value %zu is %g", i, (double)x[i]);
    out[0] = (uint8_t)c->id;
    out[1] = (uint8_t)(c->id == FED_CODEC_TOPK ? c->values : FED_CODEC_F32);
    fed_codec_id vid = c->id == FED_CODEC_TOPK ? c->values : c->id;
    fed_store_le16(out + 2, vid == FED_CODEC_Q8 || vid == FED_CODEC_Q4 ? FED_CODEC_BLOCK : 0);
    fed_store_le32(out + 4, 0);
    fed_store_le64(out + 8, n);
    fed_store_le64(out + 16, k);
    if (c->id != FED_CODEC_TOPK)
        return encode_values(c->id, x, n, seed, out + FED_CODEC_HEADER, sent);
    uint32_t *hist = fed_mallocarray(65536, sizeof *hist);
    uint32_t *idx = fed_mallocarray(k ? k : 1, sizeof *idx);
    float *vals = fed_mallocarray(k ? k : 1, sizeof *vals);
    fed_err err = FED_OK;
    if (!hist || !idx || !vals) {
        err = FED_ENOMEM;
        goto done;
    }
    if (k) top_k(x, n, k, hist, idx);
    uint8_t *p = out + FED_CODEC_HEADER;
    for (size_t j = 0; j < k; j++) {
        p = fed_store_le32(p, idx[j]);
        vals[j] = x[idx[j]];
    }
    err = encode_values(c->values, vals, k, seed, p, sent ? vals : NULL);
    if (!err && sent) {
        memset(sent, 0, n * sizeof *sent);
        for (size_t j = 0; j < k; j++) sent[idx[j]] = vals[j];
    }
done:
    fed_free(hist);
    fed_free(idx);
    fed_free(vals);
    return err;
}

/* ---- decoding --------------------------------------------------------------------------- */

/* k values of the dense codec id at in (its exact size checked) into out[idx[j]] (idx
 * NULL: out[j]). */
#define PUT(j, v) (out[idx ? fed_load_le32(idx + 4 * (j)) : (j)] = (v))
static fed_err decode_values(fed_codec_id id, const uint8_t *in, size_t k, const uint8_t *idx,
                             float *out) {
    if (id == FED_CODEC_F16 || id == FED_CODEC_BF16) {
        uint16_t special = id == FED_CODEC_F16 ? 0x7c00 : 0x7f80;
        for (size_t j = 0; j < k; j++) {
            uint16_t h = fed_load_le16(in + 2 * j);
            if ((h & special) == special)
                return fed_errorf(FED_EFORMAT, "codec stream: value %zu is Inf or NaN (0x%04x)", j,
                                  h);
            PUT(j, id == FED_CODEC_F16 ? fed_f16_to_f32(h) : fed_bf16_to_f32(h));
        }
        return FED_OK;
    }
    if (id == FED_CODEC_Q8 || id == FED_CODEC_Q4) {
        size_t nb = blocks_of(k);
        const uint8_t *codes = in + 8 * nb;
        int levels = id == FED_CODEC_Q8 ? 256 : 16;
        for (size_t b = 0; b < nb; b++) {
            float lo = float_of(fed_load_le32(in + 8 * b)),
                  step = float_of(fed_load_le32(in + 8 * b + 4));
            if (!scale_ok(lo, step, levels))
                return fed_errorf(FED_EFORMAT,
                                  "codec stream: block %zu scale (lo %g, step %g) is not finite "
                                  "and >= 0",
                                  b, (double)lo, (double)step);
            size_t j1 = (b + 1) * FED_CODEC_BLOCK < k ? (b + 1) * FED_CODEC_BLOCK : k;
            for (size_t j = b * FED_CODEC_BLOCK; j < j1; j++) {
                unsigned q = levels == 256 ? codes[j] : (codes[j / 2] >> (4 * (j & 1))) & 15u;
                PUT(j, lo + (float)q * step);
            }
        }
        if (id == FED_CODEC_Q4 && (k & 1) && codes[k / 2] >> 4)
            return fed_errorf(FED_EFORMAT, "codec stream: the last q4 byte's high nibble is not 0");
        return FED_OK;
    }
    for (size_t j = 0; j < k; j++) {
        float v = float_of(fed_load_le32(in + 4 * j));
        if (!isfinite(v))
            return fed_errorf(FED_EFORMAT, "codec stream: value %zu is not finite", j);
        PUT(j, v);
    }
    return FED_OK;
}
#undef PUT

fed_err fed_codec_decode(const uint8_t *in, size_t len, float *out, size_t n, fed_codec *got) {
    if (len < FED_CODEC_HEADER)
        return fed_errorf(FED_EFORMAT, "codec stream: %zu bytes, shorter than its %d-byte header",
                          len, FED_CODEC_HEADER);
    unsigned id = in[0], vid = in[1], block = fed_load_le16(in + 2);
    uint64_t hn = fed_load_le64(in + 8), k = fed_load_le64(in + 16);
    if (id < FED_CODEC_F16 || id > FED_CODEC_TOPK)
        return fed_errorf(FED_EFORMAT, "codec stream: codec %u unknown", id);
    if (id == FED_CODEC_TOPK ? vid > FED_CODEC_Q4 : vid != 0)
        return fed_errorf(FED_EFORMAT, "codec stream: values codec %u with codec %u", vid, id);
    fed_codec_id dense = id == FED_CODEC_TOPK ? (fed_codec_id)vid : (fed_codec_id)id;
    unsigned want_block = dense == FED_CODEC_Q8 || dense == FED_CODEC_Q4 ? FED_CODEC_BLOCK : 0;
    if (block != want_block)
        return fed_errorf(FED_EFORMAT, "codec stream: block %u, expected %u", block, want_block);
    if (fed_load_le32(in + 4) != 0)
        return fed_errorf(FED_EFORMAT, "codec stream: reserved field is not 0");
    if (hn != n)
        return fed_errorf(FED_EFORMAT, "codec stream: n %llu, expected %zu", (unsigned long long)hn,
                          n);
    if (id == FED_CODEC_TOPK ? k > n || (k == 0 && n > 0) : k != n)
        return fed_errorf(FED_EFORMAT, "codec stream: k %llu with n %zu", (unsigned long long)k, n);
    size_t want = stream_size((fed_codec_id)id, dense, (size_t)k);
    if (len != want)
        return fed_errorf(FED_EFORMAT, "codec stream: %zu bytes, its header says %zu", len, want);
    const uint8_t *p = in + FED_CODEC_HEADER, *idx = NULL;
    if (id == FED_CODEC_TOPK) {
        idx = p;
        for (size_t j = 0; j < k; j++) {
            uint32_t i = fed_load_le32(idx + 4 * j);
            if (i >= n || (j && i <= fed_load_le32(idx + 4 * (j - 1))))
                return fed_errorf(FED_EFORMAT,
                                  "codec stream: index %zu is %u (must be < n %zu and increasing)",
                                  j, i, n);
        }
        p += 4 * k;
        memset(out, 0, n * sizeof *out);
    }
    fed_err err = decode_values(dense, p, (size_t)k, idx, out);
    if (err) return err;
    if (got) {
        got->id = (fed_codec_id)id;
        got->values = id == FED_CODEC_TOPK ? dense : FED_CODEC_F32;
        got->fraction = id == FED_CODEC_TOPK && n ? (double)k / (double)n : 0.0;
    }
    return FED_OK;
}
