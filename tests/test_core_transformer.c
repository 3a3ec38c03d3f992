/* Transformer layers beyond their gradients (test_core_gradcheck covers those): specs
 * with nested residual blocks and their errors, the canonical JSON, tensor names, the
 * USE-lite architecture's table, attention against its textbook reference in padded and
 * packed layouts, padding that changes nothing, a sequence output's shape, bad token ids,
 * and a new head on a sentence encoder. */
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/kernels.h"
#include "core/model.h"
#include "core/rng.h"
#include "test.h"

#include <stdlib.h>

static void bad_spec(const char *spec, fed_err code, const char *msg_part) {
    fed_arch *a = NULL;
    fed_errclear();
    CHECK_ERR(fed_arch_parse(&a, spec), code);
    CHECK(a == NULL);
    CHECK_CONTAINS(fed_errmsg(), msg_part);
    fed_arch_destroy(&a);
}

#define EMB "{\"type\":\"embedding\",\"vocab\":9,\"dim\":8,\"pad\":true}"

TEST(malformed_specs) {
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\"}]}", FED_EFORMAT,
             "layer 1 (residual): field \"layers\" must be a non-empty array");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\",\"layers\":[]}]}",
             FED_EFORMAT, "non-empty array");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\",\"layers\":[{\"type\":"
             "\"linear\",\"out\":4}]}]}",
             FED_ESHAPE, "layer 1 (residual-end): the block maps width 8 to 4; add \"proj\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\",\"layers\":[{\"type\":"
             "\"relu\"},{\"type\":\"lineer\"}]}]}",
             FED_EFORMAT, "layer 1.1: unknown type \"lineer\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"flatten\"}]}", FED_ESHAPE,
             "layer 1 (flatten): cannot take a padded token sequence; pool it first");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"attention\",\"heads\":3}]}",
             FED_ESHAPE, "layer 1 (attention): 3 heads do not divide the width 8");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"attention\"}]}", FED_EFORMAT,
             "layer 1 (attention): missing field \"heads\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"attention\",\"heads\":2,"
             "\"causal\":1}]}",
             FED_EFORMAT, "field \"causal\": must be true or false");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"positions\",\"kind\":\"rope\"}]}",
             FED_EFORMAT, "field \"kind\": must be \"sinusoidal\" or \"learned\"");
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":2,\"name\":\"a b\"}]}",
             FED_EFORMAT, "field \"name\": must be 1 to 39 characters of [A-Za-z0-9_.-]");
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":2,\"name\":\"1\"},"
             "{\"type\":\"linear\",\"out\":2}]}",
             FED_EFORMAT, "layer name \"1\" is used twice");
    bad_spec("{\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"k\":3,"
             "\"lora\":{\"rank\":2}}]}",
             FED_EFORMAT,
             "layer 0 (conv2d): field \"lora\": adapters need a 1x1 convolution (k 1, stride 1, "
             "pad 0)");
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":2,\"lora\":{\"rank\":0}}]}",
             FED_EFORMAT,
             "layer 0 (linear): field \"lora\": field \"rank\": must be an integer in [1, 1024]");
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":2,\"lora\":{\"rank\":2,"
             "\"on\":[\"qkv\"]}}]}",
             FED_EFORMAT, "field \"on\": \"qkv\" is not a weight of this layer");
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"meanpool\"}]}", FED_ESHAPE,
             "layer 0 (meanpool): needs a (T, D) sequence, got 1 dimension(s)");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"l2norm\",\"eps\":0}]}", FED_EFORMAT,
             "field \"eps\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\",\"layers\":[{\"type\":"
             "\"relu\"}],\"skip\":1}]}",
             FED_EFORMAT, "layer 1 (residual): unknown field \"skip\"");
    /* Nine nested blocks are one too many. */
    char deep[2048] = "{\"input\":[5],\"layers\":[" EMB;
    for (int i = 0; i < 9; i++)
        strcat(deep, ",{\"type\":\"residual\",\"layers\":[{\"type\":\"relu\"}");
    for (int i = 0; i < 9; i++) strcat(deep, "]}");
    strcat(deep, "]}");
    bad_spec(deep, FED_EFORMAT, "blocks nest deeper than 8");
}

static fed_arch *arch_of(const char *spec) {
    fed_arch *a = NULL;
    CHECK_OK(fed_arch_parse(&a, spec));
    return a;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

TEST(use_lite_architecture) {
    char *spec = read_text(FED_TEST_DATA "/use_lite_arch.json");
    CHECK(spec != NULL);
    if (!spec) return;
    fed_arch *a = arch_of(spec);
    free(spec);
    if (!a) return;
    /* Every float of the TF.js model but the 128 inverse timescales, which the
     * positions layer computes. */
    CHECK_SIZE(fed_arch_num_params(a), 6975744);
    fed_shape out = fed_arch_shape_at(a, fed_arch_num_layers(a));
    CHECK_INT(out.ndim, 1);
    CHECK_SIZE(out.d[0], 512);
    fed_model *m = NULL;
    CHECK_OK(fed_model_new(&m, a));
    if (m) {
        static const struct {
            const char *name;
            size_t d0, d1;
        } want[] = {{"embed.weight", 8002, 256},          {"l0.attn.proj.weight", 512, 256},
                    {"l0.attn.norm.weight", 256, 0},      {"l0.attn.mha.qkv.weight", 768, 256},
                    {"l0.attn.mha.out.weight", 512, 256}, {"l0.ffn.fc1.weight", 1536, 512},
                    {"l0.ffn.fc2.weight", 512, 1536},     {"l1.attn.mha.qkv.weight", 1536, 512},
                    {"l1.attn.mha.out.bias", 512, 0},     {"pool.dense.weight", 512, 512}};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            const fed_tensor *t = fed_model_find(m, want[i].name);
            CHECK(t != NULL);
            if (!t) continue;
            CHECK_SIZE(t->shape[0], want[i].d0);
            if (want[i].d1) CHECK_SIZE(t->shape[1], want[i].d1);
        }
        CHECK_SIZE(fed_model_num_tensors(m), 29);
        CHECK_SIZE(fed_model_input_size(m), 128);
        CHECK_SIZE(fed_model_output_size(m), 512);
    }
    /* The canonical JSON names only what is not the default and reads back the same. */
    char *j1 = NULL, *j2 = NULL;
    CHECK_OK(fed_arch_to_json(a, &j1));
    fed_arch *b = j1 ? arch_of(j1) : NULL;
    if (b) CHECK_OK(fed_arch_to_json(b, &j2));
    if (j1 && j2) CHECK_STR(j1, j2);
    if (j1)
        CHECK_CONTAINS(j1, "\"type\":\"residual\",\"proj\":true,\"init\":\"xavier\",\"name\":"
                           "\"l0.attn\",\"layers\":[{\"type\":\"layernorm\"");
    /* A sentence encoder gets its head appended, after the l2norm. */
    fed_model *h = NULL;
    if (m) CHECK_OK(fed_model_new_head(&h, m, 2, 5));
    if (h) {
        const fed_tensor *t = fed_model_find(h, "head.weight");
        CHECK(t && t->shape[0] == 2 && t->shape[1] == 512);
        CHECK_SIZE(fed_model_output_size(h), 2);
        CHECK_SIZE(fed_model_num_params(h), 6975744 + 2 * 512 + 2);
    }
    fed_model_destroy(&h);
    fed_free(j1);
    fed_free(j2);
    fed_arch_destroy(&b);
    fed_model_destroy(&m);
    fed_arch_destroy(&a);
}

/* The kernel against its textbook reference in three layouts of the same sentences: the
 * plain (N, T) one, padded to the stride T, and packed back to back. */
TEST(attention_matches_reference) {
    fed_rng r;
    fed_rng_seed(&r, 3);
    enum { N = 3, T = 7, D = 12, H = 3 };
    const int32_t len[N] = {7, 4, 1};
    const size_t packed_off[N] = {0, 7, 11};
    float *qkv = malloc(N * T * 3 * D * sizeof(float)),
          *packed = malloc(N * T * 3 * D * sizeof(float));
    float *a1 = calloc(N * T * D, sizeof(float)), *a2 = calloc(N * T * D, sizeof(float));
    float *a3 = calloc(N * T * D, sizeof(float));
    float *p1 = malloc(N * H * T * T * sizeof(float)), *p2 = malloc(N * H * T * T * sizeof(float));
    float *p3 = malloc(N * H * T * T * sizeof(float));
    if (!qkv || !packed || !a1 || !a2 || !a3 || !p1 || !p2 || !p3) abort();
    for (size_t i = 0; i < N * T * 3 * D; i++) qkv[i] = 4.0f * fed_rng_uniform(&r) - 2.0f;
    for (size_t n = 0; n < N; n++)
        memcpy(packed + packed_off[n] * 3 * D, qkv + n * T * 3 * D,
               (size_t)len[n] * 3 * D * sizeof(float));
    const fed_seqs plain = {NULL, NULL, N, T}, padded = {NULL, len, N, T};
    const fed_seqs pack = {packed_off, len, N, T};
    CHECK_SIZE(fed_sdpa_prob_size(&plain, H), N * H * T * T);
    CHECK_SIZE(fed_sdpa_prob_size(&pack, H), H * (49 + 16 + 1));
    for (int causal = 0; causal <= 1; causal++) {
        for (int masked = 0; masked <= 1; masked++) {
            const fed_seqs *sq = masked ? &padded : &plain;
            memset(a1, 0, N * T * D * sizeof(float)); /* padded rows stay untouched */
            memset(a2, 0, N * T * D * sizeof(float));
            fed_sdpa_forward(a1, p1, qkv, sq, D, H, causal);
            fed_sdpa_forward_ref(a2, p2, qkv, sq, D, H, causal);
            double worst = 0.0;
            for (size_t i = 0; i < N * T * D; i++) worst = fmax(worst, fabs(a1[i] - a2[i]));
            for (size_t i = 0; i < fed_sdpa_prob_size(sq, H); i++)
                worst = fmax(worst, fabs(p1[i] - p2[i]));
            CHECK(worst < 2e-6);
            /* Causally masked keys get exactly zero weight; every row sums to one. */
            size_t zero_ok = 0, rows_ok = 0, rows = 0;
            const float *P = p1;
            for (size_t n = 0; n < N; n++) {
                size_t L = masked ? (size_t)len[n] : T;
                for (size_t h = 0; h < H; h++, P += L * L)
                    for (size_t i = 0; i < L; i++, rows++) {
                        double sum = 0.0;
                        bool zeros = true;
                        for (size_t j = 0; j < L; j++) {
                            sum += (double)P[i * L + j];
                            if (causal && j > i) zeros &= P[i * L + j] == 0.0f;
                        }
                        zero_ok += zeros;
                        rows_ok += fabs(sum - 1.0) < 1e-5;
                    }
            }
            CHECK_SIZE(zero_ok, rows);
            CHECK_SIZE(rows_ok, rows);
            if (!masked) continue;
            /* Packed back to back, each sentence gets the same outputs and weights. */
            fed_sdpa_forward(a3, p3, packed, &pack, D, H, causal);
            worst = 0.0;
            for (size_t n = 0; n < N; n++)
                for (size_t i = 0; i < (size_t)len[n] * D; i++)
                    worst = fmax(worst, fabs(a3[packed_off[n] * D + i] - a1[n * T * D + i]));
            for (size_t i = 0; i < fed_sdpa_prob_size(&pack, H); i++)
                worst = fmax(worst, fabs(p3[i] - p1[i]));
            CHECK(worst == 0.0);
        }
    }
    /* Huge scores do not overflow: the softmax subtracts the row maximum. */
    for (size_t i = 0; i < N * T * 3 * D; i++) qkv[i] *= 400.0f;
    fed_sdpa_forward(a1, p1, qkv, &padded, D, H, 0);
    bool finite = true;
    for (size_t i = 0; i < N * T * D; i++) finite &= isfinite(a1[i]) != 0;
    CHECK(finite);
    free(qkv);
    free(packed);
    free(a1);
    free(a2);
    free(a3);
    free(p1);
    free(p2);
    free(p3);
}

/* A small encoder for the padding tests. */
#define ENCODER                                                                                    \
    "{\"input\":[6],\"layers\":[" EMB ",{\"type\":\"positions\"},"                                 \
    "{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},{\"type\":\"attention\","         \
    "\"heads\":2}]},{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},"                  \
    "{\"type\":\"linear\",\"out\":16},{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":8}]},"      \
    "{\"type\":\"meanpool\"},{\"type\":\"linear\",\"out\":8},{\"type\":\"tanh\"},"                 \
    "{\"type\":\"l2norm\"}]}"

static fed_model *encoder(void) {
    fed_arch *a = arch_of(ENCODER);
    fed_model *m = NULL;
    if (a) CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (m) fed_model_init(m, 17);
    return m;
}

TEST(padding_changes_nothing) {
    fed_model *m = encoder();
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    /* Sentence s alone (3 rows), then in a batch whose other sentence fills T (packed,
     * the 9 tokens take 5 rows per example: one row belongs to no sentence). */
    const float alone[6] = {3, 5, 7, -1, -1, -1};
    const float batch[12] = {1, 2, 3, 4, 5, 6, 3, 5, 7, -1, -1, -1};
    const float *y1, *y2;
    float v1[8];
    CHECK_OK(fed_model_forward(m, a, alone, 1, FED_MODE_EVAL, NULL, &y1));
    memcpy(v1, y1, sizeof v1);
    fed_arena_reset(a);
    CHECK_OK(fed_model_forward(m, a, batch, 2, FED_MODE_EVAL, NULL, &y2));
    double worst = 0.0, norm = 0.0;
    for (int i = 0; i < 8; i++) {
        worst = fmax(worst, fabs(v1[i] - y2[8 + i]));
        norm += (double)v1[i] * (double)v1[i];
    }
    CHECK(worst < 1e-6);
    CHECK_NEAR(norm, 1.0, 1e-5); /* l2norm */
    /* Different sentences give different vectors. */
    double diff = 0.0;
    for (int i = 0; i < 8; i++) diff += fabs(y2[i] - y2[8 + i]);
    CHECK(diff > 1e-2);
done:
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

/* A network whose output is the sequence itself (no meanpool) returns (N, T, out) for
 * every batch, whatever its longest sentence: each sentence's rows are those it has
 * alone, and a second sentence starts at row T. */
TEST(sequence_output_keeps_its_shape) {
    fed_arch *arch = arch_of("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"positions\"},"
                             "{\"type\":\"attention\",\"heads\":2,\"causal\":true},"
                             "{\"type\":\"linear\",\"out\":3}]}");
    fed_model *m = NULL;
    fed_arena *a = NULL;
    if (arch) CHECK_OK(fed_model_new(&m, arch));
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    fed_model_init(m, 23);
    CHECK_SIZE(fed_model_output_size(m), 15);
    const float first[5] = {1, 2, -1, -1, -1}, second[5] = {3, 4, 5, -1, -1};
    const float batch[10] = {1, 2, -1, -1, -1, 3, 4, 5, -1, -1};
    float alone[2][15];
    const float *y;
    for (int i = 0; i < 2; i++) {
        fed_arena_reset(a);
        CHECK_OK(fed_model_forward(m, a, i ? second : first, 1, FED_MODE_EVAL, NULL, &y));
        memcpy(alone[i], y, sizeof alone[i]);
    }
    fed_arena_reset(a);
    CHECK_OK(fed_model_forward(m, a, batch, 2, FED_MODE_EVAL, NULL, &y));
    double worst = 0.0;
    for (int t = 0; t < 2 * 3; t++) worst = fmax(worst, fabs(y[t] - alone[0][t]));
    for (int t = 0; t < 3 * 3; t++) worst = fmax(worst, fabs(y[15 + t] - alone[1][t]));
    CHECK(worst < 1e-6);
    /* The second sentence is not where the first one's padding is. */
    CHECK(fabs(y[6] - alone[1][0]) > 1e-3);
done:
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
}

static void bad_ids(fed_model *m, fed_arena *a, const float *x, const char *msg) {
    const float *y;
    fed_errclear();
    fed_arena_reset(a);
    CHECK_ERR(fed_model_forward(m, a, x, 1, FED_MODE_EVAL, NULL, &y), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), msg);
}

TEST(bad_token_ids) {
    fed_model *m = encoder();
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    const float empty[6] = {-1, -1, -1, -1, -1, -1};
    const float gap[6] = {1, -1, 2, -1, -1, -1};
    const float big[6] = {1, 9, -1, -1, -1, -1};
    const float frac[6] = {1.5f, -1, -1, -1, -1, -1};
    const float neg[6] = {1, -2, -1, -1, -1, -1};
    bad_ids(m, a, empty, "layer 0 (embedding): example 0 is empty (padding only)");
    bad_ids(m, a, gap, "example 0: token id at position 2 follows padding");
    bad_ids(m, a, big, "example 0 position 1: token id 9 is not an integer in [0, 9)");
    bad_ids(m, a, frac, "token id 1.5 is not an integer");
    bad_ids(m, a, neg, "token id -2 is not an integer");
done:
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

/* Output of m on two padded sentences into y (2 x K). */
static void encode2(fed_model *m, float *y) {
    const float x[12] = {1, 2, 3, 4, 5, 6, 3, 5, -1, -1, -1, -1};
    fed_arena *a = NULL;
    const float *out = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (a) CHECK_OK(fed_model_forward(m, a, x, 2, FED_MODE_EVAL, NULL, &out));
    size_t K = fed_model_output_size(m);
    for (size_t i = 0; i < 2 * K; i++) y[i] = out ? out[i] : NAN;
    fed_arena_destroy(&a);
}

TEST(lora_add_and_merge) {
    fed_model *m = encoder(), *l = NULL, *g = NULL;
    if (!m) return;
    size_t matched = 0;
    /* Attention only: qkv and out of the one attention layer. */
    CHECK_OK(
        fed_model_add_lora(&l, m, 4, 8.0f, "*.qkv.weight, *.out.weight", SIZE_MAX, 3, &matched));
    CHECK_SIZE(matched, 2);
    if (!l) goto done;
    /* B = 0: the same function as before, bit for bit. */
    float y0[16], y1[16], y2[16];
    encode2(m, y0);
    encode2(l, y1);
    CHECK_MEM(y0, y1, sizeof y0);
    /* Only the adapters train: 4 * (8 + 24) + 4 * (8 + 8). */
    CHECK_SIZE(fed_model_num_trainable(l), 4 * 32 + 4 * 16);
    CHECK_SIZE(fed_model_num_params(l), fed_model_num_params(m) + 4 * 32 + 4 * 16);
    const fed_tensor *A = fed_model_find(l, "2.1.qkv.lora_A"),
                     *B = fed_model_find(l, "2.1.qkv.lora_B");
    CHECK(A && A->trainable && A->shape[0] == 4 && A->shape[1] == 8);
    CHECK(B && B->trainable && B->shape[0] == 24 && B->shape[1] == 4);
    CHECK(!fed_model_find(l, "2.1.qkv.weight")->trainable);
    /* Some training later: B is not zero. The merged model computes the same. */
    float *p = fed_model_params(l);
    fed_rng r;
    fed_rng_seed(&r, 8);
    for (size_t i = 0; i < fed_model_num_tensors(l); i++) {
        const fed_tensor *t = fed_model_tensor(l, i);
        if (strstr(t->name, "lora_B"))
            for (size_t j = 0; j < t->numel; j++) p[t->offset + j] = fed_rng_normal(&r) * 0.3f;
    }
    encode2(l, y1);
    CHECK_OK(fed_model_merge_lora(&g, l));
    if (g) {
        encode2(g, y2);
        double worst = 0.0, moved = 0.0;
        for (int i = 0; i < 16; i++) {
            worst = fmax(worst, fabs((double)y1[i] - (double)y2[i]));
            moved = fmax(moved, fabs((double)y1[i] - (double)y0[i]));
        }
        CHECK(worst < 1e-6);
        CHECK(moved > 1e-3);
        CHECK_SIZE(fed_model_num_params(g), fed_model_num_params(m));
        CHECK(fed_model_find(g, "2.1.qkv.lora_A") == NULL);
        CHECK_SIZE(fed_arch_num_lora(fed_model_arch(g)), 0);
    }
    /* The adapters survive the canonical JSON. */
    char *j = NULL;
    CHECK_OK(fed_arch_to_json(fed_model_arch(l), &j));
    if (j) CHECK_CONTAINS(j, "\"lora\":{\"rank\":4,\"alpha\":8,\"on\":[\"qkv\",\"out\"]}");
    fed_arch *back = j ? arch_of(j) : NULL;
    if (back) CHECK_SIZE(fed_arch_num_params(back), fed_model_num_params(l));
    fed_arch_destroy(&back);
    fed_free(j);
    /* Errors: a glob that matches no weight, twice the same adapters, a bad rank. */
    fed_model *bad = NULL;
    fed_errclear();
    CHECK_ERR(fed_model_add_lora(&bad, m, 4, 8.0f, "*.qkv.wieght", SIZE_MAX, 3, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "\"*.qkv.wieght\" matches no weight that takes adapters");
    CHECK_ERR(fed_model_add_lora(&bad, l, 4, 8.0f, "*.qkv.weight", SIZE_MAX, 3, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "2.1.qkv.weight has adapters already");
    CHECK_ERR(fed_model_add_lora(&bad, m, 0, 8.0f, NULL, SIZE_MAX, 3, NULL), FED_EINVAL);
    CHECK(bad == NULL);
    /* Everything (NULL) but the pooled dense "5" (flat index 13: blocks unroll into
     * their layers and an end): 2 attention weights, 2 FFN linears. */
    fed_model_destroy(&l);
    CHECK_OK(fed_model_add_lora(&l, m, 2, 2.0f, NULL, 13, 3, &matched));
    CHECK_SIZE(matched, 4);
    if (l) CHECK(fed_model_find(l, "5.lora_A") == NULL && fed_model_find(l, "5.weight")->trainable);
done:
    fed_model_destroy(&g);
    fed_model_destroy(&l);
    fed_model_destroy(&m);
}

TEST(lora_on_a_1x1_convolution) {
    fed_arch *a = arch_of("{\"input\":[3,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":5,"
                          "\"k\":1},{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":2,\"k\":3},"
                          "{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":2}]}");
    fed_model *m = NULL, *l = NULL, *g = NULL;
    if (a) CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (!m) return;
    fed_model_init(m, 4);
    size_t matched = 0;
    /* Everything: the 1x1 convolution and the linear head, not the 3x3 convolution. */
    CHECK_OK(fed_model_add_lora(&l, m, 2, 4.0f, NULL, SIZE_MAX, 9, &matched));
    CHECK_SIZE(matched, 2);
    fed_errclear();
    CHECK_ERR(fed_model_add_lora(&g, m, 2, 4.0f, "2.weight", SIZE_MAX, 9, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "\"2.weight\" matches no weight that takes adapters");
    if (!l) goto done;
    const fed_tensor *A = fed_model_find(l, "0.lora_A");
    CHECK(A && A->shape[0] == 2 && A->shape[1] == 3);
    float *p = fed_model_params(l);
    fed_rng r;
    fed_rng_seed(&r, 2);
    const fed_tensor *B = fed_model_find(l, "0.lora_B");
    for (size_t j = 0; B && j < B->numel; j++) p[B->offset + j] = 0.5f * fed_rng_normal(&r);
    CHECK_OK(fed_model_merge_lora(&g, l));
    fed_arena *ar = NULL;
    CHECK_OK(fed_arena_new(&ar, 0));
    float x[2 * 48], y1[4];
    for (size_t i = 0; i < 96; i++) x[i] = fed_rng_normal(&r);
    const float *out = NULL;
    if (g && ar) {
        CHECK_OK(fed_model_forward(l, ar, x, 2, FED_MODE_EVAL, NULL, &out));
        if (out) memcpy(y1, out, sizeof y1);
        fed_arena_reset(ar);
        CHECK_OK(fed_model_forward(g, ar, x, 2, FED_MODE_EVAL, NULL, &out));
        double worst = 0.0;
        for (int i = 0; out && i < 4; i++)
            worst = fmax(worst, fabs((double)y1[i] - (double)out[i]));
        CHECK(out && worst < 1e-5);
    }
    fed_arena_destroy(&ar);
done:
    fed_model_destroy(&g);
    fed_model_destroy(&l);
    fed_model_destroy(&m);
}

int main(void) {
    fed_blas_set_threads(1);
    RUN(malformed_specs);
    RUN(use_lite_architecture);
    RUN(attention_matches_reference);
    RUN(padding_changes_nothing);
    RUN(sequence_output_keeps_its_shape);
    RUN(bad_token_ids);
    RUN(lora_add_and_merge);
    RUN(lora_on_a_1x1_convolution);
    return test_report();
}
