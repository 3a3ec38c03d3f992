/* The update codecs (core/codec.h): names, exact stream sizes, the half-float roundings
 * against hand-computed bit patterns, the stated error bounds, unbiased stochastic
 * rounding, top-k selection and ties, composition, determinism, the decoder on
 * malformed streams (every truncation, every field), and allocation failures. */
#include "core/codec.h"
#include "core/endian.h"
#include "core/rng.h"
#include "tests/test.h"

#include <math.h>
#include <string.h>

static fed_codec codec(const char *name) {
    fed_codec c = {FED_CODEC_F32, FED_CODEC_F32, 0};
    if (fed_codec_parse(&c, name) != FED_OK) fprintf(stderr, "cannot parse %s\n", name);
    return c;
}

/* Encodes x with `name` and seed into a fresh buffer (*len bytes); sent: decoded form. */
static uint8_t *enc(const char *name, const float *x, size_t n, uint64_t seed, size_t *len,
                    float *sent) {
    fed_codec c = codec(name);
    *len = fed_codec_size(&c, n);
    uint8_t *b = fed_malloc(*len);
    CHECK_OK(fed_codec_encode(&c, x, n, seed, b, *len, sent));
    return b;
}

static double dif(float a, float b) {
    return fabs((double)a - (double)b);
}

static void normals(float *x, size_t n, uint64_t seed, float scale) {
    fed_rng r;
    fed_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * fed_rng_normal(&r);
}

TEST(names_and_sizes) {
    const char *ok[][2] = {{"none", "none"},
                           {"fp16", "fp16"},
                           {"bf16", "bf16"},
                           {"q8", "q8"},
                           {"q4", "q4"},
                           {"topk:0.01", "topk:0.01"},
                           {"topk:0.01+q8", "topk:0.01+q8"},
                           {"topk:1+fp16", "topk:1+fp16"},
                           {"topk:.5+bf16", "topk:0.5+bf16"}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        fed_codec c;
        char name[FED_CODEC_NAME];
        CHECK_OK(fed_codec_parse(&c, ok[i][0]));
        fed_codec_name(&c, name);
        CHECK_STR(name, ok[i][1]);
    }
    const char *bad[] = {"",         "q16",         "topk",      "topk:",  "topk:0",
                         "topk:1.5", "topk:0.1+q3", "topk:0.1+", "topk:x", "topk:0.1+topk:0.1",
                         "Q8",       "none "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fed_codec c;
        CHECK_ERR(fed_codec_parse(&c, bad[i]), FED_EINVAL);
    }
    fed_codec c;
    CHECK_ERR(fed_codec_parse(&c, "q16"), FED_EINVAL);
    CHECK_STR(fed_errdetail(FED_EINVAL),
              "unknown compression codec \"q16\"; the codecs are none, fp16, bf16, q8, q4, topk:F "
              "or topk:F+fp16|bf16|q8|q4 with F in (0, 1]");
    c = codec("none");
    CHECK_SIZE(fed_codec_size(&c, 1000), 0);
    c = codec("fp16");
    CHECK_SIZE(fed_codec_size(&c, 1000), 24 + 2000);
    c = codec("bf16");
    CHECK_SIZE(fed_codec_size(&c, 1000), 24 + 2000);
    c = codec("q8"); /* 4 blocks of (lo, step) */
    CHECK_SIZE(fed_codec_size(&c, 1000), 24 + 32 + 1000);
    c = codec("q4");
    CHECK_SIZE(fed_codec_size(&c, 1001), 24 + 32 + 501);
    c = codec("topk:0.01"); /* k = 10: indices and f32 values */
    CHECK_SIZE(fed_codec_kept(&c, 1000), 10);
    CHECK_SIZE(fed_codec_size(&c, 1000), 24 + 40 + 40);
    CHECK_SIZE(fed_codec_kept(&c, 1001), 11); /* ceil */
    CHECK_SIZE(fed_codec_kept(&c, 5), 1);     /* at least 1 */
    c = codec("topk:0.01+q8");
    CHECK_SIZE(fed_codec_size(&c, 1000), 24 + 40 + 8 + 10);
}

TEST(half_floats) {
    CHECK_INT(fed_f32_to_f16(1.0f), 0x3c00);
    CHECK_INT(fed_f32_to_f16(-2.0f), 0xc000);
    CHECK_INT(fed_f32_to_f16(65504.0f), 0x7bff);
    CHECK_INT(fed_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);            /* tie: to even */
    CHECK_INT(fed_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);        /* tie: to even (up) */
    CHECK_INT(fed_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above the tie */
    CHECK_INT(fed_f32_to_f16(0x1p-24f), 0x0001);                   /* smallest subnormal */
    CHECK_INT(fed_f32_to_f16(0x1p-25f), 0x0000);                   /* tie to even: 0 */
    CHECK_INT(fed_f32_to_f16(0x1.8p-25f), 0x0001);
    CHECK_INT(fed_f32_to_f16(0x1p-14f), 0x0400); /* smallest normal */
    CHECK(fed_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(fed_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(fed_f16_to_f32(0xbc00) == -1.0f);
    CHECK_INT(fed_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(fed_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie: to even */
    CHECK_INT(fed_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie: to even (up) */
    CHECK(fed_bf16_to_f32(0xc040) == -3.0f);
    /* Every half float round-trips exactly through f32. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7c00) != 0x7c00 && fed_f32_to_f16(fed_f16_to_f32((uint16_t)h)) != h) bad++;
    CHECK_INT(bad, 0);
}

/* fp16: relative error <= 2^-11 in the normal range (>= 2^-14), absolute <= 2^-25
 * below; bf16: relative <= 2^-8. sent is what decodes. */
TEST(half_float_bounds) {
    enum { N = 4096 };
    static float x[N], y[N], sent[N];
    normals(x, N, 7, 3.0f);
    x[0] = 1e-6f;
    x[1] = -65504.0f;
    x[2] = 0.0f;
    size_t len;
    uint8_t *b = enc("fp16", x, N, 1, &len, sent);
    CHECK_SIZE(len, 24 + 2 * N);
    CHECK_OK(fed_codec_decode(b, len, y, N, NULL));
    CHECK_MEM(y, sent, sizeof y);
    double worst = 0;
    for (size_t i = 0; i < N; i++) {
        double e = dif(y[i], x[i]),
               bound = fabs((double)x[i]) >= 0x1p-14 ? fabs((double)x[i]) * 0x1p-11 : 0x1p-25;
        if (e / bound > worst) worst = e / bound;
    }
    CHECK(worst <= 1.0);
    fed_free(b);
    b = enc("bf16", x, N, 1, &len, sent);
    CHECK_OK(fed_codec_decode(b, len, y, N, NULL));
    CHECK_MEM(y, sent, sizeof y);
    worst = 0;
    for (size_t i = 0; i < N; i++)
        if (x[i] != 0 && dif(y[i], x[i]) / fabs((double)x[i]) / 0x1p-8 > worst)
            worst = dif(y[i], x[i]) / fabs((double)x[i]) / 0x1p-8;
    CHECK(worst <= 1.0);
    fed_free(b);
    /* Out of range: fp16 above 65504 (65520 rounds to Inf), bf16 near FLT_MAX. */
    fed_codec c = codec("fp16");
    uint8_t out[24 + 2];
    float big = 65520.0f;
    CHECK_ERR(fed_codec_encode(&c, &big, 1, 0, out, sizeof out, NULL), FED_ERANGE);
    CHECK_STR(fed_errdetail(FED_ERANGE), "fp16 cannot hold 65520 (value 0): use bf16");
    c = codec("bf16");
    big = 3.4028235e38f;
    CHECK_ERR(fed_codec_encode(&c, &big, 1, 0, out, sizeof out, NULL), FED_ERANGE);
    float nan = NAN;
    CHECK_ERR(fed_codec_encode(&c, &nan, 1, 0, out, sizeof out, NULL), FED_ENONFINITE);
    CHECK_ERR(fed_codec_encode(&c, &nan, 1, 0, out, sizeof out - 1, NULL), FED_EINVAL);
}

/* q8, q4: |x' - x| < step = (block max - block min) / (L - 1), per block; the bytes
 * depend on the seed only; constant blocks are exact. */
TEST(quantization_bounds) {
    enum { N = 1000 };
    static float x[N], y[N], sent[N];
    normals(x, N, 3, 0.01f);
    for (size_t i = 512; i < 768; i++) x[i] = 0.25f; /* a constant block */
    const char *names[] = {"q8", "q4"};
    const double levels[] = {255, 15};
    for (int c = 0; c < 2; c++) {
        size_t len, len2;
        uint8_t *b = enc(names[c], x, N, 42, &len, sent);
        uint8_t *b2 = enc(names[c], x, N, 42, &len2, NULL);
        CHECK_MEM(b, b2, len);
        fed_free(b2);
        b2 = enc(names[c], x, N, 43, &len2, NULL);
        CHECK(memcmp(b, b2, len) != 0);
        fed_free(b2);
        CHECK_OK(fed_codec_decode(b, len, y, N, NULL));
        CHECK_MEM(y, sent, sizeof y);
        int over = 0;
        for (size_t b0 = 0; b0 < N; b0 += 256) {
            size_t b1 = b0 + 256 < N ? b0 + 256 : N;
            float lo = x[b0], hi = x[b0];
            for (size_t i = b0; i < b1; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
            double step = ((double)hi - (double)lo) / levels[c];
            for (size_t i = b0; i < b1; i++) over += dif(y[i], x[i]) > step * (1 + 1e-5) + 1e-12;
        }
        CHECK_INT(over, 0);
        for (size_t i = 512; i < 768; i++) over += y[i] != 0.25f;
        CHECK_INT(over, 0);
        fed_free(b);
    }
    /* A block whose step is subnormal (no finite inverse): codes by division, never NaN
     * (fuzz_codec found the 0 x Inf). Values 0 and 1e-40: step 6.7e-42 for q8. */
    float tiny[4] = {0, 1e-40f, 5e-41f, 0}, back[4];
    size_t len;
    uint8_t *b = enc("q8", tiny, 4, 3, &len, NULL);
    CHECK_OK(fed_codec_decode(b, len, back, 4, NULL));
    CHECK(back[0] == 0 && back[3] == 0);
    CHECK(dif(back[1], tiny[1]) <= 1e-40 / 255 * 1.01);
    CHECK(back[2] >= 0 && back[2] <= 1e-40f);
    fed_free(b);
}

/* Stochastic rounding is unbiased: over 4 000 seeds the mean decoded value of each float
 * is within 0.05 step of it (6 standard deviations of the mean: each draw errs by at most
 * one step). Deterministic rounding to nearest would miss by up to half a step. */
TEST(quantization_unbiased) {
    enum { N = 300, SEEDS = 4000 };
    static float x[N], y[N];
    static double mean[N];
    normals(x, N, 11, 1.0f);
    fed_codec c = codec("q4");
    uint8_t buf[24 + 16 + 150];
    CHECK_SIZE(fed_codec_size(&c, N), sizeof buf);
    for (uint64_t s = 0; s < SEEDS; s++) {
        if (fed_codec_encode(&c, x, N, s, buf, sizeof buf, NULL) ||
            fed_codec_decode(buf, sizeof buf, y, N, NULL))
            break;
        for (size_t i = 0; i < N; i++) mean[i] += ((double)y[i] - (double)x[i]) / SEEDS;
    }
    float st; /* the first block's step (its min and max do not depend on the seed) */
    uint32_t u = fed_load_le32(buf + 24 + 4);
    memcpy(&st, &u, 4);
    double step0 = st;
    CHECK(step0 > 0.1 && step0 < 1.0);
    double worst = 0, total = 0;
    for (size_t i = 0; i < 256; i++) {
        worst = fmax(worst, fabs(mean[i]) / step0);
        total += mean[i];
    }
    CHECK(worst < 0.05);
    CHECK(fabs(total / 256) / step0 < 0.01);
}

TEST(topk_selection) {
    float x[10] = {0.5f, -3, 1, 3, -0.25f, 2, -1, 0, 3, 0.1f};
    float y[10], sent[10];
    size_t len;
    uint8_t *b = enc("topk:0.3", x, 10, 0, &len, sent); /* k = 3: |3| thrice, lower first */
    CHECK_SIZE(len, 24 + 12 + 12);
    CHECK_INT(fed_load_le32(b + 24), 1);
    CHECK_INT(fed_load_le32(b + 28), 3);
    CHECK_INT(fed_load_le32(b + 32), 8);
    fed_codec got;
    CHECK_OK(fed_codec_decode(b, len, y, 10, &got));
    float want[10] = {0, -3, 0, 3, 0, 0, 0, 0, 3, 0};
    CHECK_MEM(y, want, sizeof y);
    CHECK_MEM(sent, want, sizeof y);
    CHECK_INT(got.id, FED_CODEC_TOPK);
    CHECK_INT(got.values, FED_CODEC_F32);
    CHECK_NEAR(got.fraction, 0.3, 1e-12);
    fed_free(b);
    b = enc("topk:0.5", x, 10, 0, &len, NULL); /* k = 5: |3| thrice, 2, then 1 or -1 */
    CHECK_OK(fed_codec_decode(b, len, y, 10, NULL));
    int kept = 0;
    for (int i = 0; i < 10; i++) kept += y[i] != 0;
    CHECK_INT(kept, 5);
    CHECK(y[2] == 1 && y[6] == 0); /* the tie |1| = |-1| keeps the lower index */
    fed_free(b);
    /* Composition: the kept values through fp16 and q8. */
    enum { N = 5000 };
    static float v[N], w[N], s2[N];
    normals(v, N, 5, 1.0f);
    b = enc("topk:0.02+fp16", v, N, 9, &len, s2);
    CHECK_SIZE(len, 24 + 100 * 4 + 100 * 2);
    CHECK_OK(fed_codec_decode(b, len, w, N, &got));
    CHECK_MEM(w, s2, sizeof w);
    CHECK_INT(got.values, FED_CODEC_F16);
    int nz = 0, bad = 0;
    float thr = 0;
    for (size_t i = 0; i < N; i++)
        if (w[i] != 0) nz++, bad += dif(w[i], v[i]) > fabs((double)v[i]) * 0x1p-11;
    for (size_t i = 0; i < N; i++)
        if (w[i] == 0) thr = fmaxf(thr, fabsf(v[i])); /* the largest dropped */
    for (size_t i = 0; i < N; i++) bad += w[i] != 0 && fabsf(v[i]) < thr;
    CHECK_INT(nz, 100);
    CHECK_INT(bad, 0);
    fed_free(b);
    b = enc("topk:0.02+q8", v, N, 9, &len, s2);
    CHECK_SIZE(len, 24 + 400 + 8 + 100);
    CHECK_OK(fed_codec_decode(b, len, w, N, NULL));
    CHECK_MEM(w, s2, sizeof w);
    fed_free(b);
}

/* Writes a valid stream of `name` for 600 floats into buf; returns its length. */
static size_t sample(const char *name, uint8_t *buf, size_t cap) {
    static float x[600];
    normals(x, 600, 1, 1.0f);
    fed_codec c = codec(name);
    size_t len = fed_codec_size(&c, 600);
    if (len > cap || fed_codec_encode(&c, x, 600, 1, buf, len, NULL)) return 0;
    return len;
}

static fed_err dec(const uint8_t *b, size_t len) {
    static float y[600];
    return fed_codec_decode(b, len, y, 600, NULL);
}

TEST(malformed_streams) {
    static uint8_t b[8192];
    const char *names[] = {"fp16", "bf16", "q8", "q4", "topk:0.1", "topk:0.1+q4", "topk:0.1+bf16"};
    for (size_t c = 0; c < sizeof names / sizeof *names; c++) {
        size_t len = sample(names[c], b, sizeof b);
        CHECK(len > 0);
        CHECK_OK(dec(b, len));
        int wrong = 0; /* every truncation and one extra byte */
        for (size_t l = 0; l < len; l++) wrong += dec(b, l) != FED_EFORMAT;
        wrong += dec(b, len + 1) != FED_EFORMAT;
        CHECK_INT(wrong, 0);
    }
    static float y[600];
    size_t len = sample("q8", b, sizeof b);
    CHECK_ERR(fed_codec_decode(b, len, y, 599, NULL), FED_EFORMAT); /* wrong n */
    CHECK_STR(fed_errdetail(FED_EFORMAT), "codec stream: n 600, expected 599");
    CHECK_ERR(dec(b, 10), FED_EFORMAT);
    CHECK_STR(fed_errdetail(FED_EFORMAT),
              "codec stream: 10 bytes, shorter than its 24-byte header");
#define BREAK(stmt, msg)                                                                           \
    do {                                                                                           \
        static uint8_t t_[8192];                                                                   \
        memcpy(t_, b, len);                                                                        \
        uint8_t *t = t_;                                                                           \
        stmt;                                                                                      \
        CHECK_ERR(dec(t, len), FED_EFORMAT);                                                       \
        CHECK_STR(fed_errdetail(FED_EFORMAT), msg);                                                \
    } while (0)
    BREAK(t[0] = 9, "codec stream: codec 9 unknown");
    BREAK(t[1] = 1, "codec stream: values codec 1 with codec 3");
    BREAK(fed_store_le16(t + 2, 100), "codec stream: block 100, expected 256");
    BREAK(t[5] = 1, "codec stream: reserved field is not 0");
    BREAK(fed_store_le64(t + 16, 601), "codec stream: k 601 with n 600");
    BREAK(fed_store_le32(t + 24 + 8, 0x7fc00000), /* block 1's lo NaN */
          "codec stream: block 1 scale (lo nan, step 0.0222198) is not finite and >= 0");
    BREAK(fed_store_le32(t + 24 + 4, 0xbf800000),
          "codec stream: block 0 scale (lo -2.87801, step -1) is not finite and >= 0");
    len = sample("q4", b, sizeof b); /* 600 codes: even, so break the header's k instead */
    BREAK(t[0] = 4; fed_store_le64(t + 16, 599), "codec stream: k 599 with n 600");
    len = sample("fp16", b, sizeof b);
    BREAK(fed_store_le16(t + 24 + 6, 0x7c00), "codec stream: value 3 is Inf or NaN (0x7c00)");
    BREAK(fed_store_le16(t + 2, 256), "codec stream: block 256, expected 0");
    len = sample("topk:0.1", b, sizeof b); /* k = 60 */
    CHECK_SIZE(len, 24 + 240 + 240);
    BREAK(fed_store_le32(t + 24 + 4 * 59, 600),
          "codec stream: index 59 is 600 (must be < n 600 and increasing)");
    {
        static uint8_t t[8192];
        memcpy(t, b, len);
        fed_store_le32(t + 28, fed_load_le32(t + 24)); /* a repeated index */
        CHECK_ERR(dec(t, len), FED_EFORMAT);
        CHECK_CONTAINS(fed_errdetail(FED_EFORMAT), "index 1 is");
        memcpy(t, b, len);
        fed_store_le64(t + 16, 700); /* k > n */
        CHECK_ERR(dec(t, len), FED_EFORMAT);
        CHECK_STR(fed_errdetail(FED_EFORMAT), "codec stream: k 700 with n 600");
        memcpy(t, b, len);
        fed_store_le64(t + 16, 0);
        CHECK_ERR(dec(t, len), FED_EFORMAT);
        memcpy(t, b, len);
        fed_store_le32(t + 24 + 240, 0x7f800000); /* an f32 value Inf */
        CHECK_ERR(dec(t, len), FED_EFORMAT);
        CHECK_STR(fed_errdetail(FED_EFORMAT), "codec stream: value 0 is not finite");
        memcpy(t, b, len);
        t[1] = 7;
        CHECK_ERR(dec(t, len), FED_EFORMAT);
        CHECK_STR(fed_errdetail(FED_EFORMAT), "codec stream: values codec 7 with codec 5");
    }
    /* q4 with an odd count: the last byte's high nibble must be 0. */
    float x[3] = {1, 2, 3}, yy[3];
    fed_codec c = codec("q4");
    uint8_t q[24 + 8 + 2];
    CHECK_SIZE(fed_codec_size(&c, 3), sizeof q);
    CHECK_OK(fed_codec_encode(&c, x, 3, 0, q, sizeof q, NULL));
    CHECK_OK(fed_codec_decode(q, sizeof q, yy, 3, NULL));
    q[sizeof q - 1] |= 0x10;
    CHECK_ERR(fed_codec_decode(q, sizeof q, yy, 3, NULL), FED_EFORMAT);
    CHECK_STR(fed_errdetail(FED_EFORMAT), "codec stream: the last q4 byte's high nibble is not 0");
#undef BREAK
}

TEST(allocation_failures) {
    static float x[2000], sent[2000];
    normals(x, 2000, 2, 1.0f);
    fed_codec c = codec("topk:0.01+q8");
    size_t len = fed_codec_size(&c, 2000);
    uint8_t *b = fed_malloc(len);
    FOR_EACH_ALLOC_FAILURE(f) {
        (void)ALLOC_TRY(f, fed_codec_encode(&c, x, 2000, 0, b, len, sent));
    }
    fed_free(b);
}

int main(void) {
    RUN(names_and_sizes);
    RUN(half_floats);
    RUN(half_float_bounds);
    RUN(quantization_bounds);
    RUN(quantization_unbiased);
    RUN(topk_selection);
    RUN(malformed_streams);
    RUN(allocation_failures);
    return test_report();
}
