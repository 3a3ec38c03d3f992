/* End-to-end learning with the core: XOR and a synthetic 3-class task to >= 99%
 * accuracy, bit-for-bit determinism, frozen layers untouched by training, dropout,
 * BCE and MSE training, and the errors fed_train_step gives for bad labels. */
#include "core/arch.h"
#include "core/arena.h"
#include "core/model.h"
#include "core/optim.h"
#include "dataset/synthetic.h"
#include "core/train.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static fed_model *model_from(const char *spec, uint64_t seed) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) || fed_model_new(&m, a)) m = NULL;
    fed_arch_destroy(&a);
    if (m) fed_model_init(m, seed);
    return m;
}

static const fed_loss_config CE = {FED_LOSS_SOFTMAX_CE, 0.0f};

/* Trains on (x, y) for `epochs` with shuffled mini-batches; returns the last epoch's
 * mean loss. */
static double train(fed_model *m, fed_optim *o, fed_arena *a, const float *x, const int32_t *y,
                    size_t n, size_t batch, int epochs, float lr, uint64_t seed) {
    size_t d = fed_model_input_size(m);
    size_t *idx = malloc(n * sizeof *idx);
    float *bx = malloc(batch * d * sizeof *bx);
    int32_t *by = malloc(batch * sizeof *by);
    fed_rng r;
    fed_rng_seed(&r, seed);
    double epoch_loss = 0.0;
    for (size_t i = 0; i < n; i++) idx[i] = i;
    for (int e = 0; e < epochs; e++) {
        fed_rng_shuffle(&r, idx, n);
        epoch_loss = 0.0;
        for (size_t s = 0; s < n; s += batch) {
            size_t nb = n - s < batch ? n - s : batch;
            for (size_t j = 0; j < nb; j++) {
                memcpy(bx + j * d, x + idx[s + j] * d, d * sizeof(float));
                by[j] = y[idx[s + j]];
            }
            fed_batch b = {bx, by, NULL, nb};
            fed_step_stats st;
            fed_err err = fed_train_step(m, o, a, &b, &CE, lr, &r, &st);
            if (err) {
                CHECK_OK(err);
                goto done;
            }
            epoch_loss += st.loss * (double)nb;
        }
        epoch_loss /= (double)n;
    }
done:
    free(idx);
    free(bx);
    free(by);
    return epoch_loss;
}

static double accuracy(fed_model *m, fed_arena *a, const float *x, const int32_t *y, size_t n) {
    fed_batch b = {x, y, NULL, n};
    fed_step_stats st;
    CHECK_OK(fed_eval_batch(m, a, &b, &CE, &st));
    return (double)st.correct / (double)n;
}

TEST(xor_is_learned_deterministically) {
    const float x[8] = {0, 0, 0, 1, 1, 0, 1, 1};
    const int32_t y[4] = {0, 1, 1, 0};
    const char *spec = "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":8},"
                       "{\"type\":\"tanh\"},{\"type\":\"linear\",\"out\":2}]}";
    uint64_t hashes[2];
    for (int run = 0; run < 2; run++) {
        fed_model *m = model_from(spec, 11);
        fed_arena *a = NULL;
        fed_optim *o = NULL;
        fed_optim_config cfg = fed_optim_defaults(FED_OPT_SGD);
        cfg.momentum = 0.9f;
        CHECK_OK(fed_arena_new(&a, 0));
        CHECK_OK(fed_optim_new(&o, m, &cfg));
        if (!o || !a) return;
        double loss = train(m, o, a, x, y, 4, 4, 500, 0.1f, 3);
        CHECK(loss < 0.01);
        CHECK_NEAR(accuracy(m, a, x, y, 4), 1.0, 0.0);
        hashes[run] = fnv1a(fed_model_params(m), fed_model_num_params(m) * sizeof(float));
        fed_optim_destroy(&o);
        fed_arena_destroy(&a);
        fed_model_destroy(&m);
    }
    CHECK(hashes[0] == hashes[1]); /* same seed, same bits */
}

enum { NTRAIN = 1500, NTEST = 600 };

TEST(spirals_reach_99_percent) {
    static float xtr[NTRAIN * 2], xte[NTEST * 2];
    static int32_t ytr[NTRAIN], yte[NTEST];
    fed_rng r;
    fed_rng_seed(&r, 2024);
    fed_synth_spirals(xtr, ytr, NTRAIN, 3, 0.75f, 0.05f, &r);
    fed_synth_spirals(xte, yte, NTEST, 3, 0.75f, 0.05f, &r);
    const char *spec = "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":64},"
                       "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":64},{\"type\":\"relu\"},"
                       "{\"type\":\"linear\",\"out\":3}]}";
    uint64_t hashes[2];
    double acc[2];
    for (int run = 0; run < 2; run++) {
        fed_model *m = model_from(spec, 5);
        fed_arena *a = NULL;
        fed_optim *o = NULL;
        fed_optim_config cfg = fed_optim_defaults(FED_OPT_ADAM);
        CHECK_OK(fed_arena_new(&a, 0));
        CHECK_OK(fed_optim_new(&o, m, &cfg));
        if (!o || !a) return;
        double before = accuracy(m, a, xte, yte, NTEST);
        train(m, o, a, xtr, ytr, NTRAIN, 32, 60, 0.01f, 9);
        acc[run] = accuracy(m, a, xte, yte, NTEST);
        CHECK(before < 0.6);
        hashes[run] = fnv1a(fed_model_params(m), fed_model_num_params(m) * sizeof(float));
        fed_optim_destroy(&o);
        fed_arena_destroy(&a);
        fed_model_destroy(&m);
    }
    fprintf(stderr, "spirals: held-out accuracy %.4f\n", acc[0]);
    CHECK(acc[0] >= 0.99);
    CHECK(hashes[0] == hashes[1]);
    CHECK_NEAR(acc[0], acc[1], 0.0);
}

TEST(frozen_layers_unchanged_bit_for_bit) {
    static float x[300 * 2];
    static int32_t y[300];
    fed_rng r;
    fed_rng_seed(&r, 1);
    fed_synth_spirals(x, y, 300, 3, 0.75f, 0.05f, &r);
    const char *spec =
        "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":16},"
        "{\"type\":\"layernorm\"},{\"type\":\"gelu\"},{\"type\":\"dropout\",\"p\":0.2},"
        "{\"type\":\"linear\",\"out\":3}]}";
    fed_model *m = model_from(spec, 2);
    fed_arena *a = NULL;
    fed_optim *o = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    if (!m || !a) return;
    CHECK_SIZE(fed_model_set_trainable_glob(m, "[01].*", false), 4);
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_ADAMW); /* decays weights... */
    CHECK_OK(fed_optim_new(&o, m, &cfg));
    if (!o) return;
    size_t nbytes = fed_model_num_params(m) * sizeof(float);
    float *before = malloc(nbytes);
    memcpy(before, fed_model_params(m), nbytes);
    const fed_tensor *head = fed_model_find(m, "4.weight");
    train(m, o, a, x, y, 300, 20, 3, 0.05f, 4);
    /* ...but never frozen ones: layers 0 and 1 are identical, byte for byte. */
    size_t frozen_end = head->offset;
    CHECK_MEM(fed_model_params(m), before, frozen_end * sizeof(float));
    CHECK(memcmp(fed_model_params(m) + frozen_end, before + frozen_end,
                 nbytes - frozen_end * sizeof(float)) != 0);
    /* Their gradients were never even computed. */
    float zero[16] = {0};
    CHECK_MEM(fed_model_grads(m), zero, sizeof zero);
    free(before);
    fed_optim_destroy(&o);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

/* zero_grad only pays for the trainable tensors, yet the whole gradient buffer reads
 * zero: a tensor frozen after it had a gradient gets that gradient cleared. */
TEST(zero_grad_after_freezing) {
    const char *spec = "{\"input\":[3],\"layers\":[{\"type\":\"linear\",\"out\":4},"
                       "{\"type\":\"tanh\"},{\"type\":\"linear\",\"out\":2}]}";
    fed_model *m = model_from(spec, 5);
    fed_arena *a = NULL;
    fed_optim *o = NULL;
    CHECK_OK(fed_arena_new(&a, 0));
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_SGD);
    if (m) CHECK_OK(fed_optim_new(&o, m, &cfg));
    if (!m || !a || !o) goto done;
    const float x[6] = {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f};
    const int32_t y[2] = {1, 0};
    fed_batch b = {x, y, NULL, 2};
    fed_step_stats st;
    CHECK_OK(fed_train_step(m, o, a, &b, &CE, 0.1f, NULL, &st));
    size_t np = fed_model_num_params(m), nonzero = 0, n0 = 4 * 3 + 4;
    const float *g = fed_model_grads(m);
    for (size_t i = 0; i < n0; i++) nonzero += g[i] != 0.0f;
    CHECK(nonzero > 0); /* layer 0 had a gradient... */
    CHECK_SIZE(fed_model_set_trainable_glob(m, "0.*", false), 2);
    nonzero = 0;
    for (size_t i = 0; i < n0; i++) nonzero += g[i] != 0.0f;
    CHECK_SIZE(nonzero, 0); /* ...which freezing cleared */
    CHECK_OK(fed_train_step(m, o, a, &b, &CE, 0.1f, NULL, &st));
    fed_model_zero_grad(m);
    nonzero = 0;
    for (size_t i = 0; i < np; i++) nonzero += g[i] != 0.0f;
    CHECK_SIZE(nonzero, 0);
done:
    fed_optim_destroy(&o);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

TEST(bce_and_mse_train) {
    /* BCE: two independent labels, t0 = x0 > 0, t1 = x1 > 0. */
    enum { N = 200 };
    static float x[N * 2], t[N * 2], yreg[N];
    fed_rng r;
    fed_rng_seed(&r, 8);
    for (int i = 0; i < N; i++) {
        x[2 * i] = 2.0f * fed_rng_uniform(&r) - 1.0f;
        x[2 * i + 1] = 2.0f * fed_rng_uniform(&r) - 1.0f;
        t[2 * i] = x[2 * i] > 0.0f ? 1.0f : 0.0f;
        t[2 * i + 1] = x[2 * i + 1] > 0.0f ? 1.0f : 0.0f;
        yreg[i] = 3.0f * x[2 * i] - 2.0f * x[2 * i + 1] + 0.5f;
    }
    fed_model *m = model_from("{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2}]}", 1);
    fed_model *lin = model_from("{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":1}]}", 1);
    fed_arena *a = NULL;
    fed_optim *o = NULL, *o2 = NULL;
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_SGD);
    CHECK_OK(fed_arena_new(&a, 0));
    CHECK_OK(fed_optim_new(&o, m, &cfg));
    CHECK_OK(fed_optim_new(&o2, lin, &cfg));
    if (!a || !o || !o2) return;
    fed_loss_config bce = {FED_LOSS_BCE, 0}, mse = {FED_LOSS_MSE, 0};
    fed_batch b = {x, NULL, t, N}, breg = {x, NULL, yreg, N};
    fed_step_stats first, st;
    CHECK_OK(fed_eval_batch(m, a, &b, &bce, &first));
    for (int i = 0; i < 300; i++) CHECK_OK(fed_train_step(m, o, a, &b, &bce, 2.0f, NULL, &st));
    CHECK(st.loss < first.loss / 3.0);
    for (int i = 0; i < 300; i++)
        CHECK_OK(fed_train_step(lin, o2, a, &breg, &mse, 0.2f, NULL, &st));
    CHECK(st.loss < 1e-6);
    const float *w = fed_model_params(lin); /* recovers y = 3 x0 - 2 x1 + 0.5 */
    CHECK_NEAR(w[0], 3.0, 1e-3);
    CHECK_NEAR(w[1], -2.0, 1e-3);
    CHECK_NEAR(w[2], 0.5, 1e-3);

    /* Bad targets and labels are errors naming the example, never a crash. */
    t[2 * 7 + 1] = 2.0f;
    CHECK_ERR(fed_train_step(m, o, a, &b, &bce, 0.1f, NULL, &st), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "example 7: target 2 outside [0, 1]");
    yreg[3] = NAN;
    CHECK_ERR(fed_eval_batch(lin, a, &breg, &mse, &st), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "example 3: target nan not finite");
    int32_t labels[3] = {0, 1, 2};
    fed_batch bl = {x, labels, NULL, 3};
    CHECK_ERR(fed_train_step(m, o, a, &bl, &CE, 0.1f, NULL, &st), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "example 2: label 2 outside [0, 2)");
    fed_loss_config smooth = {FED_LOSS_SOFTMAX_CE, 1.0f};
    labels[2] = 1;
    CHECK_ERR(fed_eval_batch(m, a, &bl, &smooth, &st), FED_EINVAL);
    CHECK_ERR(fed_eval_batch(m, a, &b, &CE, &st), FED_EINVAL); /* no labels */
    fed_batch empty = {x, labels, NULL, 0};
    CHECK_ERR(fed_eval_batch(m, a, &empty, &CE, &st), FED_EINVAL);
    fed_optim_destroy(&o);
    fed_optim_destroy(&o2);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
    fed_model_destroy(&lin);
}

TEST(dropout_needs_rng_in_training) {
    fed_model *m = model_from("{\"input\":[2],\"layers\":[{\"type\":\"dropout\"},"
                              "{\"type\":\"linear\",\"out\":2}]}",
                              1);
    fed_arena *a = NULL;
    fed_optim *o = NULL;
    fed_optim_config cfg = fed_optim_defaults(FED_OPT_SGD);
    CHECK_OK(fed_arena_new(&a, 0));
    CHECK_OK(fed_optim_new(&o, m, &cfg));
    if (!a || !o) return;
    float x[2] = {1, 2};
    int32_t y[1] = {1};
    fed_batch b = {x, y, NULL, 1};
    fed_step_stats st;
    CHECK_ERR(fed_train_step(m, o, a, &b, &CE, 0.1f, NULL, &st), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "layer 0 (dropout): training needs an rng");
    fed_optim_destroy(&o);
    fed_arena_destroy(&a);
    fed_model_destroy(&m);
}

int main(void) {
    RUN(xor_is_learned_deterministically);
    RUN(spirals_reach_99_percent);
    RUN(frozen_layers_unchanged_bit_for_bit);
    RUN(zero_grad_after_freezing);
    RUN(bce_and_mse_train);
    RUN(dropout_needs_rng_in_training);
    return test_report();
}
