/* The decoder half of a small GPT beyond its gradients (test_core_gradcheck covers those):
 * the tied output layer "lmhead" and its spec errors, what counts as a language model,
 * causality (logits at position t ignore the tokens after t), padding that changes
 * nothing, and the next-token loss through fed_train_step and fed_eval_batch (token
 * counts, perplexity of a uniform model, a loss that falls, the errors). */
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/loss.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/train.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>

static void bad_spec(const char *spec, fed_err code, const char *msg_part) {
    fed_arch *a = NULL;
    fed_errclear();
    CHECK_ERR(fed_arch_parse(&a, spec), code);
    CHECK(a == NULL);
    CHECK_CONTAINS(fed_errmsg(), msg_part);
    fed_arch_destroy(&a);
}

static fed_arch *arch_of(const char *spec) {
    fed_arch *a = NULL;
    CHECK_OK(fed_arch_parse(&a, spec));
    return a;
}

#define EMB "{\"type\":\"embedding\",\"vocab\":9,\"dim\":8,\"pad\":true,\"name\":\"wte\"}"

/* Two pre-norm blocks (causal attention, GELU MLP 4x), learned positions, a final layer
 * norm and the tied head: vocabulary 11, T 6, width 8. */
#define GPT                                                                                        \
    "{\"input\":[6],\"layers\":["                                                                  \
    "{\"type\":\"embedding\",\"vocab\":11,\"dim\":8,\"pad\":true,\"name\":\"wte\"},"               \
    "{\"type\":\"positions\",\"kind\":\"learned\",\"name\":\"wpe\"},"                              \
    "{\"type\":\"residual\",\"name\":\"h0a\",\"layers\":[{\"type\":\"layernorm\"},"                \
    "{\"type\":\"attention\",\"heads\":2,\"causal\":true}]},"                                      \
    "{\"type\":\"residual\",\"name\":\"h0m\",\"layers\":[{\"type\":\"layernorm\"},"                \
    "{\"type\":\"linear\",\"out\":32},{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":8}]},"      \
    "{\"type\":\"residual\",\"name\":\"h1a\",\"layers\":[{\"type\":\"layernorm\"},"                \
    "{\"type\":\"attention\",\"heads\":2,\"causal\":true}]},"                                      \
    "{\"type\":\"residual\",\"name\":\"h1m\",\"layers\":[{\"type\":\"layernorm\"},"                \
    "{\"type\":\"linear\",\"out\":32},{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":8}]},"      \
    "{\"type\":\"layernorm\",\"name\":\"ln_f\"},{\"type\":\"lmhead\",\"tie\":\"wte\"}]}"

TEST(malformed_lmhead) {
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"lmhead\"}]}", FED_EFORMAT,
             "layer 1 (lmhead): field \"tie\": must be the name of an embedding layer (1 to 39 "
             "characters)");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"lmhead\",\"tie\":3}]}", FED_EFORMAT,
             "layer 1 (lmhead): field \"tie\": must be the name of an embedding layer");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"lmhead\",\"tie\":\"wte\","
             "\"bias\":true}]}",
             FED_EFORMAT, "layer 1 (lmhead): unknown field \"bias\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"lmhead\",\"tie\":\"wtf\"}]}",
             FED_EFORMAT, "layer 1 (lmhead): field \"tie\": no layer is named \"wtf\"");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"positions\",\"name\":\"pos\"},"
             "{\"type\":\"lmhead\",\"tie\":\"pos\"}]}",
             FED_EFORMAT,
             "layer 2 (lmhead): field \"tie\": layer \"pos\" is positions, not an "
             "embedding");
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"linear\",\"out\":6},"
             "{\"type\":\"lmhead\",\"tie\":\"wte\"}]}",
             FED_ESHAPE,
             "layer 2 (lmhead): field \"tie\": embedding \"wte\" is 8 wide, the "
             "lmhead's input 6");
    /* An embedding after the head (unpadded, so a flatten may lead to it). */
    bad_spec("{\"input\":[5],\"layers\":[{\"type\":\"embedding\",\"vocab\":9,\"dim\":8},"
             "{\"type\":\"lmhead\",\"tie\":\"late\"},{\"type\":\"flatten\"},"
             "{\"type\":\"embedding\",\"vocab\":4,\"dim\":8,\"name\":\"late\"}]}",
             FED_EFORMAT,
             "layer 1 (lmhead): field \"tie\": embedding \"late\" comes after the "
             "lmhead");
    /* A tie inside a block names the embedding by its name, like any tie. */
    bad_spec("{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"residual\",\"layers\":["
             "{\"type\":\"lmhead\",\"tie\":\"wte\"}]}]}",
             FED_ESHAPE, "layer 1 (residual-end): the block maps width 8 to 9");
}

TEST(lmhead_spec) {
    fed_arch *a = arch_of(GPT);
    if (!a) return;
    /* Weights: 11*8 + 6*8 + 2 * (attention 4*8*8+4*8 + MLP 32*8+32 + 8*32+8 + 2 norms 2*2*8)
     * + final norm 2*8; the head adds nothing. */
    size_t block = (4 * 64 + 32) + (256 + 32 + 256 + 8) + 32;
    CHECK_SIZE(fed_arch_num_params(a), 88 + 48 + 2 * block + 16);
    fed_shape out = fed_arch_shape_at(a, fed_arch_num_layers(a));
    CHECK(out.ndim == 2 && out.d[0] == 6 && out.d[1] == 11);
    CHECK(fed_arch_is_lm(a));
    const fed_layer_spec *h = fed_arch_layer(a, fed_arch_num_layers(a) - 1);
    CHECK(h->kind == FED_LAYER_LMHEAD && h->tied == 0 && h->out == 11);
    CHECK_STR(fed_layer_kind_name(FED_LAYER_LMHEAD), "lmhead");
    /* The canonical JSON carries the tie and reads back the same. */
    char *j1 = NULL, *j2 = NULL;
    CHECK_OK(fed_arch_to_json(a, &j1));
    if (j1) CHECK_CONTAINS(j1, "{\"type\":\"lmhead\",\"tie\":\"wte\"}]}");
    fed_arch *b = j1 ? arch_of(j1) : NULL;
    if (b) CHECK_OK(fed_arch_to_json(b, &j2));
    if (j1 && j2) CHECK_STR(j1, j2);
    /* No new head for a language model. */
    fed_arch *nh = NULL;
    fed_errclear();
    CHECK_ERR(fed_arch_new_head(&nh, a, 3, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "new head: the model ends in an lmhead tied to embedding \"wte\" "
                                 "(a language model has no class head to replace)");
    /* LoRA keeps it a language model and leaves the head alone (it has no weight). */
    fed_arch *l = NULL;
    size_t matched = 0;
    CHECK_OK(fed_arch_add_lora(&l, a, 2, 2.0f, NULL, SIZE_MAX, &matched));
    CHECK_SIZE(matched, 2 * 4); /* per block: qkv, out and two MLP linears */
    if (l) CHECK(fed_arch_is_lm(l));
    fed_arch_destroy(&l);
    fed_arch_destroy(&b);
    fed_free(j1);
    fed_free(j2);
    fed_arch_destroy(&a);
    /* Not language models: a head over a pooled sequence, a head tied to an embedding that
     * is not the first layer's input, a classifier. */
    const char *not_lm[] = {
        "{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"meanpool\"},"
        "{\"type\":\"lmhead\",\"tie\":\"wte\"}]}",
        "{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"lmhead\",\"tie\":\"wte\"},"
        "{\"type\":\"relu\"}]}",
        "{\"input\":[5],\"layers\":[" EMB ",{\"type\":\"meanpool\"},{\"type\":\"linear\","
        "\"out\":3}]}",
        "{\"input\":[3],\"layers\":[{\"type\":\"linear\",\"out\":8},{\"type\":\"flatten\"},"
        "{\"type\":\"embedding\",\"vocab\":5,\"dim\":8,\"name\":\"e\"},"
        "{\"type\":\"lmhead\",\"tie\":\"e\"}]}",
    };
    for (size_t i = 0; i < sizeof not_lm / sizeof not_lm[0]; i++) {
        fed_arch *n = arch_of(not_lm[i]);
        if (n) CHECK(!fed_arch_is_lm(n));
        fed_arch_destroy(&n);
    }
}

TEST(gpt2_init) {
    /* "gpt2": N(0, 0.02^2) weights and zero biases, on embeddings, linear and attention. */
    fed_arch *a =
        arch_of("{\"input\":[4],\"layers\":[{\"type\":\"embedding\",\"vocab\":50,"
                "\"dim\":40,\"init\":\"gpt2\"},{\"type\":\"attention\",\"heads\":2,"
                "\"init\":\"gpt2\"},{\"type\":\"linear\",\"out\":40,\"init\":\"gpt2\"}]}");
    fed_model *m = NULL;
    if (a) CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (!m) return;
    fed_model_init(m, 9);
    static const char *const names[] = {"0.weight", "1.qkv.weight", "1.out.weight", "2.weight"};
    for (size_t k = 0; k < 4; k++) {
        const fed_tensor *t = fed_model_find(m, names[k]);
        double ss = 0.0;
        for (size_t i = 0; t && i < t->numel; i++) {
            double v = fed_model_params(m)[t->offset + i];
            ss += v * v;
        }
        CHECK(t && fabs(sqrt(ss / (double)t->numel) - 0.02) < 0.002);
    }
    const fed_tensor *bias = fed_model_find(m, "2.bias");
    CHECK(bias && fed_model_params(m)[bias->offset] == 0.0f);
    char *j = NULL;
    CHECK_OK(fed_arch_to_json(fed_model_arch(m), &j));
    if (j) CHECK_CONTAINS(j, "\"dim\":40,\"init\":\"gpt2\"");
    fed_free(j);
    fed_model_destroy(&m);
    bad_spec("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":2,\"init\":\"gpt3\"}]}",
             FED_EFORMAT,
             "field \"init\": must be \"kaiming\", \"xavier\", \"torch\", \"normal\" or \"gpt2\"");
}

static fed_model *gpt(uint64_t seed) {
    fed_arch *a = arch_of(GPT);
    fed_model *m = NULL;
    if (a) CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (m) fed_model_init(m, seed);
    return m;
}

/* Logits of one example (6 x 11) into y. */
static void logits_of(fed_model *m, fed_arena *a, const float *x, float *y) {
    const float *out = NULL;
    fed_arena_reset(a);
    CHECK_OK(fed_model_forward(m, a, x, 1, FED_MODE_EVAL, NULL, &out));
    for (size_t i = 0; i < 66; i++) y[i] = out ? out[i] : NAN;
}

TEST(causality) {
    fed_model *m = gpt(3);
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    CHECK(fed_model_find(m, "wte.weight") != NULL);
    CHECK_SIZE(fed_model_num_tensors(m), 1 + 1 + 2 * (2 + 4 + 2 + 4) + 2);
    const float base[6] = {1, 4, 1, 5, 9, 2};
    float y0[66], y1[66];
    logits_of(m, a, base, y0);
    /* Changing the token at position k leaves positions < k exactly as they were and
     * changes position k on. */
    for (size_t k = 1; k < 6; k++) {
        float x[6];
        memcpy(x, base, sizeof x);
        x[k] = (float)(((int)x[k] + 3) % 11);
        logits_of(m, a, x, y1);
        CHECK_MEM(y0, y1, k * 11 * sizeof(float));
        double moved = 0.0;
        for (size_t i = k * 11; i < (k + 1) * 11; i++) moved = fmax(moved, fabs(y0[i] - y1[i]));
        CHECK(moved > 1e-4);
    }
    /* Cutting the sequence after position 2 (padding) keeps positions 0..2. */
    const float cut[6] = {1, 4, 1, -1, -1, -1};
    logits_of(m, a, cut, y1);
    double worst = 0.0;
    for (size_t i = 0; i < 33; i++) worst = fmax(worst, fabs(y0[i] - y1[i]));
    CHECK(worst < 1e-6);
done:
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

TEST(padding_changes_nothing) {
    fed_model *m = gpt(5);
    fed_arena *a = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    const float s1[6] = {2, 7, 3, -1, -1, -1}, s2[6] = {1, 4, 1, 5, 9, 2};
    const float batch[12] = {2, 7, 3, -1, -1, -1, 1, 4, 1, 5, 9, 2};
    float y1[66], y2[66];
    logits_of(m, a, s1, y1);
    logits_of(m, a, s2, y2);
    const float *out = NULL;
    fed_arena_reset(a);
    CHECK_OK(fed_model_forward(m, a, batch, 2, FED_MODE_EVAL, NULL, &out));
    if (!out) goto done;
    double worst = 0.0;
    for (size_t i = 0; i < 33; i++) worst = fmax(worst, fabs(out[i] - y1[i]));
    for (size_t i = 0; i < 66; i++) worst = fmax(worst, fabs(out[66 + i] - y2[i]));
    CHECK(worst < 1e-5); /* logits of about 10: float rounding of gemms of other shapes */
    /* The batch's loss is the token-weighted mean of the examples' losses: 2 and 5
     * predictions. */
    fed_loss_config nt = {FED_LOSS_NEXT_TOKEN, 0.0f};
    const int32_t labels[2] = {0, 0};
    fed_step_stats st1, st2, stb;
    fed_batch b1 = {s1, labels, NULL, 1}, b2 = {s2, labels, NULL, 1}, bb = {batch, labels, NULL, 2};
    CHECK_OK(fed_eval_batch(m, a, &b1, &nt, &st1));
    CHECK_OK(fed_eval_batch(m, a, &b2, &nt, &st2));
    CHECK_OK(fed_eval_batch(m, a, &bb, &nt, &stb));
    CHECK_SIZE(st1.count, 2);
    CHECK_SIZE(st2.count, 5);
    CHECK_SIZE(stb.count, 7);
    CHECK_SIZE(stb.correct, st1.correct + st2.correct);
    CHECK_NEAR(stb.loss, (2.0 * st1.loss + 5.0 * st2.loss) / 7.0, 1e-6);
done:
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

TEST(next_token_training) {
    fed_model *m = gpt(7);
    fed_arena *a = NULL;
    fed_optim *o = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) goto done;
    CHECK(fed_loss_for_model(m) == FED_LOSS_NEXT_TOKEN);
    /* A model whose weights are all zero predicts uniformly: loss ln V, perplexity V. */
    fed_model *z = gpt(7);
    if (z) {
        memset(fed_model_params(z), 0, fed_model_num_params(z) * sizeof(float));
        const float x[6] = {1, 2, 3, 4, -1, -1};
        fed_batch b = {x, NULL, NULL, 1};
        fed_loss_config nt = {FED_LOSS_NEXT_TOKEN, 0.0f};
        fed_step_stats st;
        CHECK_OK(fed_eval_batch(z, a, &b, &nt, &st));
        CHECK_NEAR(st.loss, log(11.0), 1e-6);
        CHECK_NEAR(exp(st.loss), 11.0, 1e-5);
        CHECK_SIZE(st.count, 3);
        CHECK_SIZE(st.correct, 0); /* ties go to id 0, which never comes next */
    }
    fed_model_destroy(&z);
    /* A repeating pattern is learned: the loss falls far below ln 11 and the arg-max
     * predicts the next token. Labels are ignored. */
    const float x[24] = {1, 2, 3, 1, 2, 3, 2, 3, 1, 2, 3, 1, 3, 1, 2, 3, -1, -1, 1, 2, 3, 1, 2, -1};
    fed_batch b = {x, NULL, NULL, 4};
    fed_loss_config nt = {fed_loss_for_model(m), 0.0f};
    fed_optim_config oc = fed_optim_defaults(FED_OPT_ADAM);
    CHECK_OK(fed_optim_new(&o, m, &oc));
    if (!o) goto done;
    fed_rng r = fed_rng_stream(1, 1);
    fed_step_stats st, first;
    CHECK_OK(fed_train_step(m, o, a, &b, &nt, 1e-2f, &r, &first));
    CHECK_SIZE(first.count, 5 + 5 + 3 + 4);
    for (int i = 0; i < 60; i++) CHECK_OK(fed_train_step(m, o, a, &b, &nt, 1e-2f, &r, &st));
    CHECK_OK(fed_eval_batch(m, a, &b, &nt, &st));
    CHECK(first.loss > 2.0 && st.loss < 0.2);
    CHECK_SIZE(st.correct, 17);
    /* Errors: the next-token loss on a classifier, label smoothing on a language model. */
    fed_errclear();
    nt.label_smoothing = 0.1f;
    CHECK_ERR(fed_eval_batch(m, a, &b, &nt, &st), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "label smoothing: not for a language model");
    fed_arch *ca = arch_of("{\"input\":[6],\"layers\":[" EMB ",{\"type\":\"meanpool\"},"
                           "{\"type\":\"linear\",\"out\":3}]}");
    fed_model *c = NULL;
    if (ca) CHECK_OK(fed_model_new(&c, ca));
    fed_arch_destroy(&ca);
    if (c) {
        CHECK(fed_loss_for_model(c) == FED_LOSS_SOFTMAX_CE);
        const int32_t labels[4] = {0, 1, 2, 0};
        fed_batch cb = {x, labels, NULL, 4};
        nt.label_smoothing = 0.0f;
        fed_errclear();
        const float small[24] = {1, 2,  -1, -1, -1, -1, 1, -1, -1, -1, -1, -1,
                                 1, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1};
        cb.x = small;
        CHECK_ERR(fed_eval_batch(c, a, &cb, &nt, &st), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), "the next-token loss needs a language model");
    }
    fed_model_destroy(&c);
done:
    fed_optim_destroy(&o);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

int main(void) {
    fed_blas_set_threads(1);
    RUN(malformed_lmhead);
    RUN(lmhead_spec);
    RUN(gpt2_init);
    RUN(causality);
    RUN(padding_changes_nothing);
    RUN(next_token_training);
    return test_report();
}
