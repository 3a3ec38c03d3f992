/* Tests of architectures and models: spec parsing and its errors (malformed input),
 * shapes, tensor table, canonical JSON, seeded initialisation, freezing, and
 * constructors under fail-the-Nth-allocation. */
#include "core/alloc_internal.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/model.h"
#include "core/optim.h"
#include "tests/test.h"

#include <stdint.h>

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static fed_model *model_from(const char *spec) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) == FED_OK && fed_model_new(&m, a) != FED_OK) m = NULL;
    fed_arch_destroy(&a);
    return m;
}

TEST(presets_match_the_paper) {
    fed_model *nn = model_from("fedavg-2nn");
    fed_model *cnn = model_from("fedavg-cnn");
    CHECK(nn && cnn);
    if (!nn || !cnn) return;
    /* McMahan et al. 2017 state 199,210 and 1,663,370 parameters. */
    CHECK_SIZE(fed_model_num_params(nn), 199210);
    CHECK_SIZE(fed_model_num_params(cnn), 1663370);
    CHECK_SIZE(fed_model_input_size(cnn), 784);
    CHECK_SIZE(fed_model_output_size(cnn), 10);
    CHECK_SIZE(fed_model_num_tensors(cnn), 8);
    const fed_tensor *t = fed_model_find(cnn, "3.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_INT(t->ndim, 4);
        CHECK_SIZE(t->shape[0], 64);
        CHECK_SIZE(t->shape[1], 32);
        CHECK_SIZE(t->shape[2], 5);
        CHECK_SIZE(t->offset, 32 * 25 + 32);
        CHECK_SIZE(t->layer, 3);
    }
    t = fed_model_find(cnn, "7.weight"); /* the 3136 -> 512 layer */
    CHECK(t && t->shape[0] == 512 && t->shape[1] == 7 * 7 * 64);
    CHECK(fed_model_find(cnn, "1.weight") == NULL); /* relu has none */
    /* Tensors tile the buffer without gaps, in order. */
    size_t off = 0;
    for (size_t i = 0; i < fed_model_num_tensors(cnn); i++) {
        CHECK_SIZE(fed_model_tensor(cnn, i)->offset, off);
        off += fed_model_tensor(cnn, i)->numel;
    }
    CHECK_SIZE(off, fed_model_num_params(cnn));
    fed_shape out = fed_arch_shape_at(fed_model_arch(cnn), 6); /* after 2nd pool */
    CHECK_INT(out.ndim, 3);
    CHECK_SIZE(out.d[0], 64);
    CHECK_SIZE(out.d[1], 7);
    CHECK_SIZE(out.d[2], 7);
    CHECK_NEAR(fed_model_forward_flops(nn), 2.0 * (784 * 200 + 200 * 200 + 200 * 10), 0.5);
    /* Every layer's output for one example: linear, relu, linear, relu, linear; and
     * conv, relu, pool, conv, relu, pool, flatten, linear, relu, linear. */
    CHECK_SIZE(fed_model_activation_floats(nn), 200 + 200 + 200 + 200 + 10);
    CHECK_SIZE(fed_model_activation_floats(cnn),
               2 * 32 * 28 * 28 + 32 * 14 * 14 + 2 * 64 * 14 * 14 + 2 * 64 * 7 * 7 + 2 * 512 + 10);
    fed_model_destroy(&nn);
    fed_model_destroy(&cnn);
    CHECK(nn == NULL);
}

TEST(canonical_json_round_trip) {
    const char *spec =
        "[{\"type\":\"input\",\"shape\":[3,8,8]},"
        "{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"stride\":2,\"pad\":1,\"bias\":false},"
        "{\"type\":\"gelu\"},{\"type\":\"avgpool2d\",\"k\":2},"
        "{\"type\":\"globalavgpool\"},{\"type\":\"flatten\"},"
        "{\"type\":\"dropout\",\"p\":0.1},{\"type\":\"layernorm\"},"
        "{\"type\":\"linear\",\"out\":3,\"init\":\"torch\"}]";
    fed_arch *a = NULL, *b = NULL;
    CHECK_OK(fed_arch_parse(&a, spec));
    if (!a) return;
    char *json = NULL, *json2 = NULL;
    CHECK_OK(fed_arch_to_json(a, &json));
    CHECK_STR(json, "{\"input\":[3,8,8],\"layers\":["
                    "{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"stride\":2,\"pad\":1,\"bias\":false,"
                    "\"init\":\"kaiming\"},{\"type\":\"gelu\"},"
                    "{\"type\":\"avgpool2d\",\"k\":2,\"stride\":2},{\"type\":\"globalavgpool\"},"
                    "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.1},"
                    "{\"type\":\"layernorm\",\"eps\":1e-05},"
                    "{\"type\":\"linear\",\"out\":3,\"bias\":true,\"init\":\"torch\"}]}");
    CHECK_OK(fed_arch_parse(&b, json));
    if (b) {
        CHECK_OK(fed_arch_to_json(b, &json2));
        CHECK_STR(json2, json);
        CHECK_SIZE(fed_arch_num_layers(b), 8);
        CHECK(fed_arch_layer(b, 5)->p == 0.1f);
        fed_shape s = fed_arch_shape_at(b, 1); /* after the strided conv: 4x4x4 */
        CHECK_SIZE(s.d[0] * 100 + s.d[1] * 10 + s.d[2], 444);
        fed_shape o = fed_arch_shape_at(b, 8);
        CHECK_INT(o.ndim, 1);
        CHECK_SIZE(o.d[0], 3);
    }
    fed_free(json);
    fed_free(json2);
    fed_arch_destroy(&a);
    fed_arch_destroy(&b);
}

/* Each malformed spec must fail with the given code and a message naming the place. */
static void bad_spec(const char *spec, fed_err code, const char *msg_part) {
    fed_arch *a = NULL;
    fed_errclear();
    fed_err e = fed_arch_parse(&a, spec);
    CHECK_ERR(e, code);
    CHECK(a == NULL);
    CHECK_CONTAINS(fed_errmsg(), msg_part);
    fed_arch_destroy(&a);
}

TEST(malformed_specs) {
    bad_spec("", FED_EFORMAT, "neither JSON nor a preset");
    bad_spec("fedavg-3nn", FED_EFORMAT, "\"fedavg-3nn\" is neither JSON nor a preset");
    bad_spec("{\"input\":[784],\"layers\":[", FED_EFORMAT, "invalid JSON near offset");
    bad_spec("{\"input\":[784]}", FED_EFORMAT, "\"layers\" must be a non-empty array");
    bad_spec("{\"input\":[784],\"layers\":[]}", FED_EFORMAT, "non-empty array");
    bad_spec("{\"layers\":[{\"type\":\"relu\"}]}", FED_EFORMAT, "field \"input\"");
    bad_spec("{\"input\":[0],\"layers\":[{\"type\":\"relu\"}]}", FED_EFORMAT, "dimension 0");
    bad_spec("{\"input\":[1,2,3,4],\"layers\":[{\"type\":\"relu\"}]}", FED_EFORMAT,
             "1 to 3 positive integers");
    bad_spec("{\"input\":[2.5],\"layers\":[{\"type\":\"relu\"}]}", FED_EFORMAT, "dimension 0");
    bad_spec("{\"input\":[100000,100000],\"layers\":[{\"type\":\"relu\"}]}", FED_EFORMAT,
             "more than 268435456 elements");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"relu\"}],\"extra\":1}", FED_EFORMAT,
             "unknown field \"extra\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"relu\"},{\"type\":\"softmax\"}]}", FED_EFORMAT,
             "layer 1: unknown type \"softmax\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"out\":3}]}", FED_EFORMAT,
             "layer 0 (?): missing string field \"type\"");
    bad_spec("{\"input\":[4],\"layers\":[3]}", FED_EFORMAT, "layer 0 (?): must be an object");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\"}]}", FED_EFORMAT,
             "layer 0 (linear): missing field \"out\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":-3}]}", FED_EFORMAT,
             "layer 0 (linear): field \"out\": must be an integer");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":\"3\"}]}", FED_EFORMAT,
             "field \"out\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3,\"bais\":true}]}",
             FED_EFORMAT, "layer 0 (linear): unknown field \"bais\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3,\"bias\":1}]}", FED_EFORMAT,
             "field \"bias\": must be true or false");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3,\"init\":\"he\"}]}",
             FED_EFORMAT, "field \"init\"");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"dropout\",\"p\":1.0}]}", FED_EFORMAT,
             "layer 0 (dropout): field \"p\": must be a number in [0, 1)");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"k\":3}]}", FED_ESHAPE,
             "layer 0 (conv2d): needs a (C, H, W) input");
    bad_spec("{\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"k\":5}]}", FED_ESHAPE,
             "layer 0 (conv2d): window 5 (padding 0) does not fit a 4x4 input");
    bad_spec("{\"input\":[1,4,4],\"layers\":[{\"type\":\"flatten\"},{\"type\":\"maxpool2d\","
             "\"k\":2}]}",
             FED_ESHAPE, "layer 1 (maxpool2d)");
    bad_spec("{\"input\":[2,3],\"layers\":[{\"type\":\"embedding\",\"vocab\":10,\"dim\":4}]}",
             FED_ESHAPE, "layer 0 (embedding): needs a (T) input");
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":100000000},"
             "{\"type\":\"linear\",\"out\":100000000}]}",
             FED_ERANGE, "layer 1 (linear): too many parameters (limit 17179869184 in all)");
    bad_spec("[{\"type\":\"relu\"}]", FED_EFORMAT, "must start with {\"type\":\"input\"");
    bad_spec("[{\"type\":\"input\",\"shape\":[3]}]", FED_EFORMAT, "no layers after the input");
    bad_spec("42", FED_EFORMAT, "\"42\" is neither JSON nor a preset");
    bad_spec("[42]", FED_EFORMAT, "must start with");
}

TEST(init_is_seeded_and_scaled) {
    fed_model *a = model_from("fedavg-2nn"), *b = model_from("fedavg-2nn");
    CHECK(a && b);
    if (!a || !b) return;
    size_t n = fed_model_num_params(a) * sizeof(float);
    fed_model_init(a, 1);
    fed_model_init(b, 1);
    CHECK_MEM(fed_model_params(a), fed_model_params(b), n);
    fed_model_init(b, 2);
    CHECK(fnv1a(fed_model_params(a), n) != fnv1a(fed_model_params(b), n));
    /* Kaiming uniform: weights within sqrt(6 / fan_in), variance 2 / fan_in; bias 0. */
    const fed_tensor *w = fed_model_find(a, "0.weight"), *bias = fed_model_find(a, "0.bias");
    const float *p = fed_model_params(a) + w->offset;
    double bound = sqrt(6.0 / 784.0), var = 0.0, maxabs = 0.0;
    for (size_t i = 0; i < w->numel; i++) {
        var += (double)p[i] * (double)p[i];
        if (fabs((double)p[i]) > maxabs) maxabs = fabs((double)p[i]);
    }
    var /= (double)w->numel;
    CHECK(maxabs <= bound);
    CHECK_NEAR(var, 2.0 / 784.0, 0.05 * 2.0 / 784.0);
    double bsum = 0.0;
    for (size_t i = 0; i < bias->numel; i++)
        bsum += fabs((double)fed_model_params(a)[bias->offset + i]);
    CHECK_NEAR(bsum, 0.0, 0.0);
    fed_model_destroy(&a);
    fed_model_destroy(&b);

    /* torch init: weight and bias in +-1/sqrt(fan_in); layernorm 1 and 0; embedding N(0,1). */
    fed_model *t = model_from("{\"input\":[6],\"layers\":[{\"type\":\"embedding\",\"vocab\":50,"
                              "\"dim\":40},{\"type\":\"layernorm\"},{\"type\":\"flatten\"},"
                              "{\"type\":\"linear\",\"out\":5,\"init\":\"torch\"}]}");
    CHECK(t != NULL);
    if (!t) return;
    fed_model_init(t, 3);
    const float *tp = fed_model_params(t);
    const fed_tensor *emb = fed_model_find(t, "0.weight");
    double esq = 0.0;
    for (size_t i = 0; i < emb->numel; i++)
        esq += (double)tp[emb->offset + i] * (double)tp[emb->offset + i];
    CHECK_NEAR(esq / (double)emb->numel, 1.0, 0.1);
    CHECK(tp[fed_model_find(t, "1.weight")->offset + 7] == 1.0f);
    CHECK(tp[fed_model_find(t, "1.bias")->offset + 7] == 0.0f);
    const fed_tensor *lb = fed_model_find(t, "3.bias");
    double lbmax = 0.0;
    int nonzero = 0;
    for (size_t i = 0; i < lb->numel; i++) {
        lbmax = fmax(lbmax, fabs((double)tp[lb->offset + i]));
        nonzero += tp[lb->offset + i] != 0.0f;
    }
    CHECK(lbmax <= 1.0 / sqrt(240.0));
    CHECK_INT(nonzero, 5);
    fed_model_destroy(&t);
}

TEST(freeze_by_glob) {
    fed_model *m = model_from("fedavg-cnn");
    if (!m) return;
    CHECK_SIZE(fed_model_num_trainable(m), 1663370);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "0.*", false), 2);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "3.*", false), 2);
    CHECK_SIZE(fed_model_num_trainable(m), 1663370 - 832 - 51264);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "*.bias", false), 4);
    CHECK_SIZE(fed_model_num_trainable(m), 3136 * 512 + 512 * 10);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "nothing", false), 0);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "*", true), 8);
    CHECK_SIZE(fed_model_num_trainable(m), 1663370);

    /* Frozen tensors own no optimizer state. */
    fed_model_set_trainable_glob(m, "[03].*", false);
    fed_optim *o = NULL;
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_ADAM);
    CHECK_OK(fed_optim_new(&o, m, &cfg));
    if (o) CHECK_SIZE(fed_optim_state_size(o), 2 * (1663370 - 832 - 51264));
    fed_optim_destroy(&o);
    fed_model_destroy(&m);
}

/* The frozen flags of the 8 tensors of m as a bit string ("1": trainable), in table order. */
static void flags_of(const fed_model *m, char out[9]) {
    for (size_t i = 0; i < 8; i++) out[i] = fed_model_tensor(m, i)->trainable ? '1' : '0';
    out[8] = '\0';
}

/* fed_model_set_trainable_spec, the one parser of --freeze/--unfreeze for train,
 * coordinator and sim. The CNN's tensors: 0.weight 0.bias 3.weight 3.bias 7.weight 7.bias
 * 9.weight 9.bias; layer 1 is a ReLU (no tensors). */
TEST(freeze_spec) {
    fed_model *m = model_from("fedavg-cnn");
    if (!m) return;
    char f[9];
    size_t n = 99;

    /* A bare layer index is the whole layer: "0" freezes layer 0 (coordinator and sim
     * used to refuse it as a glob matching nothing). */
    CHECK_OK(fed_model_set_trainable_spec(m, "0", false, &n));
    CHECK_SIZE(n, 2);
    flags_of(m, f);
    CHECK_STR(f, "00111111");
    CHECK_SIZE(fed_model_num_trainable(m), 1663370 - 832);

    /* Index and glob mixed, spaces trimmed, overlaps counted once. */
    CHECK_OK(fed_model_set_trainable_spec(m, "*", true, &n));
    CHECK_SIZE(n, 8);
    CHECK_OK(fed_model_set_trainable_spec(m, " 3 ,*.bias, 3.weight", false, &n));
    CHECK_SIZE(n, 5);
    flags_of(m, f);
    CHECK_STR(f, "10001010");
    CHECK_OK(fed_model_set_trainable_spec(m, "0,*.bias", true, &n)); /* unfreezing */
    CHECK_SIZE(n, 5);
    flags_of(m, f);
    CHECK_STR(f, "11011111");

    /* No pattern: nothing to do. */
    n = 99;
    CHECK_OK(fed_model_set_trainable_spec(m, NULL, false, &n));
    CHECK_SIZE(n, 0);
    CHECK_OK(fed_model_set_trainable_spec(m, "", false, NULL));
    flags_of(m, f);
    CHECK_STR(f, "11011111");

    /* Errors name the pattern, and change nothing even when an earlier one matched. */
    CHECK_ERR(fed_model_set_trainable_spec(m, "0,nomatch", false, &n), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "\"nomatch\" matches no tensor of the model (names look like "
                            "\"0.weight\"; see fedtune info)");
    CHECK_ERR(fed_model_set_trainable_spec(m, "9.*,1", false, &n), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "\"1\" (layer 1, \"1.*\") matches no tensor");
    CHECK_ERR(fed_model_set_trainable_spec(m, "12", false, &n), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "\"12\" (layer 12, \"12.*\") matches no tensor");
    CHECK_ERR(fed_model_set_trainable_spec(m, "0,,3", false, &n), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "empty pattern in \"0,,3\"");
    CHECK_ERR(fed_model_set_trainable_spec(m, "0, ", false, &n), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "empty pattern in \"0, \"");
    flags_of(m, f);
    CHECK_STR(f, "11011111"); /* "0" and "9.*" above were not applied */
    char longp[300];
    memset(longp, '*', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    CHECK_ERR(fed_model_set_trainable_spec(m, longp, false, &n), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "is longer than 255 characters");
    longp[255] = '\0'; /* 255 characters is still a pattern */
    CHECK_OK(fed_model_set_trainable_spec(m, longp, false, &n));
    CHECK_SIZE(n, 8);
    CHECK_OK(fed_model_set_trainable_spec(m, "*", true, NULL));
    flags_of(m, f);
    CHECK_STR(f, "11111111");
    fed_model_destroy(&m);
}

TEST(copy_params_checks_layout) {
    fed_model *a = model_from("fedavg-2nn"), *b = model_from("fedavg-2nn");
    fed_model *c = model_from("{\"input\":[784],\"layers\":[{\"type\":\"linear\",\"out\":10}]}");
    if (!a || !b || !c) return;
    fed_model_init(a, 9);
    CHECK_OK(fed_model_copy_params(b, a));
    CHECK_MEM(fed_model_params(a), fed_model_params(b), fed_model_num_params(a) * sizeof(float));
    CHECK_ERR(fed_model_copy_params(c, a), FED_ESHAPE);
    CHECK_CONTAINS(fed_errmsg(), "models differ");
    fed_model_destroy(&a);
    fed_model_destroy(&b);
    fed_model_destroy(&c);
}

TEST(embedding_rejects_bad_ids) {
    fed_model *m = model_from("{\"input\":[3],\"layers\":[{\"type\":\"embedding\",\"vocab\":5,"
                              "\"dim\":2},{\"type\":\"flatten\"}]}");
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) return;
    fed_model_init(m, 1);
    const float *out;
    float good[6] = {0, 4, 2, 1, 1, 3};
    CHECK_OK(fed_model_forward(m, a, good, 2, FED_MODE_EVAL, NULL, &out));
    const float *tab = fed_model_params(m);
    CHECK(out[2] == tab[8] && out[3] == tab[9]); /* row 4 */
    float bad[6] = {0, 4, 2, 1, 5, 3};
    CHECK_ERR(fed_model_forward(m, a, bad, 2, FED_MODE_EVAL, NULL, &out), FED_ERANGE);
    CHECK_CONTAINS(fed_errmsg(), "example 1 position 1: token id 5 is not an integer in [0, 5)");
    float frac[3] = {0, 1.5f, 2};
    CHECK_ERR(fed_model_forward(m, a, frac, 1, FED_MODE_EVAL, NULL, &out), FED_ERANGE);
    float nan_id[3] = {0, NAN, 2};
    CHECK_ERR(fed_model_forward(m, a, nan_id, 1, FED_MODE_EVAL, NULL, &out), FED_ERANGE);
    CHECK_ERR(fed_model_forward(m, a, good, 0, FED_MODE_EVAL, NULL, &out), FED_EINVAL);
    /* No train-mode forward, nothing to back-propagate. */
    float dout[6] = {0};
    CHECK_ERR(fed_model_backward(m, a, dout), FED_EINVAL);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

/* Constructors under fail-the-Nth-allocation: every failure point gives FED_ENOMEM,
 * leaves *out NULL and leaks nothing (ASan's leak checker watches), and once enough
 * allocations succeed the constructor succeeds. */
TEST(constructors_under_allocation_failure) {
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_arch *a = NULL;
        ALLOC_TRY(f, fed_arch_parse(&a, "fedavg-cnn"));
        if (f.failed) CHECK(a == NULL);
        fed_arch_destroy(&a);
    }

    fed_arch *arch = NULL;
    CHECK_OK(fed_arch_parse(&arch, "fedavg-cnn"));
    if (!arch) return;
    FOR_EACH_ALLOC_FAILURE(f) {
        char *json = NULL;
        ALLOC_TRY(f, fed_arch_to_json(arch, &json));
        if (f.failed) CHECK(json == NULL);
        fed_free(json);
    }

    FOR_EACH_ALLOC_FAILURE(f) {
        fed_model *m = NULL;
        ALLOC_TRY(f, fed_model_new(&m, arch));
        if (f.failed) CHECK(m == NULL);
        fed_model_destroy(&m);
    }

    fed_model *m = NULL;
    CHECK_OK(fed_model_new(&m, arch));
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_ADAMW);
    if (m) {
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_optim *o = NULL;
            ALLOC_TRY(f, fed_optim_new(&o, m, &cfg));
            if (f.failed) CHECK(o == NULL);
            fed_optim_destroy(&o);
        }
    }
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
}

/* A site's update over the trainable tensors only, in manifest order. */
TEST(delta_over_trainable) {
    fed_model *m = model_from("{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2},"
                              "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":1}]}");
    if (!m) return;
    CHECK_OK(fed_model_set_trainable_spec(m, "0.weight,2.bias", false, NULL));
    /* 0.weight (4) frozen, 0.bias (2) trainable, 2.weight (2) trainable, 2.bias frozen */
    CHECK_SIZE(fed_model_num_trainable(m), 4);
    float local[9], global[9], out[4];
    for (int i = 0; i < 9; i++) local[i] = (float)(i * i), global[i] = (float)i;
    CHECK(fed_model_delta(m, local, global, out));
    const float want[4] = {12, 20, 30, 42}; /* i^2 - i at 4, 5, 6, 7 */
    CHECK_MEM(out, want, sizeof want);
    local[6] = INFINITY;
    CHECK(!fed_model_delta(m, local, global, out));
    CHECK(isinf(out[2]));
    local[6] = 36.0f;
    local[0] = NAN; /* frozen: not part of the update */
    CHECK(fed_model_delta(m, local, global, out));
    fed_model_destroy(&m);
}

int main(void) {
    RUN(presets_match_the_paper);
    RUN(canonical_json_round_trip);
    RUN(malformed_specs);
    RUN(init_is_seeded_and_scaled);
    RUN(freeze_by_glob);
    RUN(delta_over_trainable);
    RUN(freeze_spec);
    RUN(copy_params_checks_layout);
    RUN(embedding_rejects_bad_ids);
    RUN(constructors_under_allocation_failure);
    return test_report();
}
