/* The training loop and evaluation (training/fit.h), and the fine-tuning helpers of the
 * model (new head, clone, dropout override): metrics against hand-computed values,
 * early stopping restoring the best epoch bit for bit, frozen tensors untouched,
 * determinism, and the pre-train -> fine-tune story (a pre-trained backbone reaches the
 * target accuracy in fewer epochs than training from scratch). */
#include "core/alloc_internal.h"
#include "core/arch.h"
#include "dataset/dataset.h"
#include "training/fit.h"
#include "core/model.h"
#include "dataset/synthetic.h"
#include "tests/test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static fed_model *model_from(const char *spec, uint64_t seed) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) || fed_model_new(&m, a)) abort();
    fed_arch_destroy(&a);
    fed_model_init(m, seed);
    return m;
}

/* n spiral points in a data set; label = arm, or arm % 2 when binary. */
static fed_dataset *spirals(size_t n, size_t arms, bool binary, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, 2, binary ? 2 : arms)) abort();
    fed_rng r = fed_rng_stream(seed, 0);
    fed_synth_spirals(d->x, d->y, n, arms, 1.0f, 0.1f, &r);
    if (binary)
        for (size_t i = 0; i < n; i++) d->y[i] %= 2;
    return d;
}

/* Random features and labels: nothing to learn, so validation loss rises once the
 * model memorises the training set. */
static fed_dataset *noise_set(size_t n, size_t dim, size_t classes, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, dim, classes)) abort();
    fed_rng r = fed_rng_stream(seed, 9);
    for (size_t i = 0; i < n * dim; i++) d->x[i] = fed_rng_normal(&r);
    for (size_t i = 0; i < n; i++) d->y[i] = (int32_t)fed_rng_below(&r, classes);
    return d;
}

TEST(evaluate_hand_computed) {
    /* logits = x through an identity head; class 3 is never a label nor predicted. */
    fed_model *m = model_from("{\"input\":[3],\"layers\":[{\"type\":\"linear\",\"out\":4}]}", 1);
    float *w = fed_model_params(m) + fed_model_find(m, "0.weight")->offset;
    float *b = fed_model_params(m) + fed_model_find(m, "0.bias")->offset;
    for (size_t i = 0; i < 12; i++) w[i] = (i / 3 == i % 3) ? 1.0f : 0.0f;
    for (size_t i = 0; i < 4; i++) b[i] = 0.0f;
    const int32_t truth[8] = {0, 0, 0, 1, 1, 2, 2, 2};
    const int32_t pred[8] = {0, 0, 1, 1, 2, 2, 2, 0};
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 8, 3, 3));
    for (size_t i = 0; i < 8; i++) {
        d->y[i] = truth[i];
        for (size_t j = 0; j < 3; j++) d->x[i * 3 + j] = (int32_t)j == pred[i] ? 2.0f : 0.0f;
    }
    fed_eval_result r;
    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
    CHECK_OK(fed_evaluate(m, d, 3, &loss, &r)); /* batch 3: three passes, the last short */
    CHECK_SIZE(r.n, 8);
    CHECK_SIZE(r.num_classes, 4);
    const size_t want_conf[16] = {2, 1, 0, 0, 0, 1, 1, 0, 1, 0, 2, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < 16; i++) CHECK_SIZE(r.confusion[i], want_conf[i]);
    CHECK_NEAR(r.accuracy, 0.625, 1e-12);
    double L = log(exp(2.0) + 3.0); /* 4 logits: one 2, three 0 */
    CHECK_NEAR(r.loss, (5.0 * (L - 2.0) + 3.0 * L) / 8.0, 1e-6);
    CHECK_NEAR(r.precision[0], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(r.precision[1], 0.5, 1e-12);
    CHECK_NEAR(r.precision[2], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(r.recall[0], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(r.recall[1], 0.5, 1e-12);
    CHECK_NEAR(r.recall[2], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(r.f1[1], 0.5, 1e-12);
    CHECK_NEAR(r.f1[3], 0.0, 0.0);
    CHECK_SIZE(r.support[0], 3);
    CHECK_SIZE(r.support[3], 0);
    /* scikit-learn: f1_score([0,0,0,1,1,2,2,2], [0,0,1,1,2,2,2,0], average="macro") */
    CHECK_NEAR(r.macro_f1, 0.611111111111, 1e-9);
    fed_eval_result_free(&r);
    double ce = 0, acc = 0; /* the coordinator's, the sites' and sim's evaluation */
    CHECK_OK(fed_evaluate_ce(m, d, 0, &ce, &acc));
    CHECK_NEAR(acc, 0.625, 1e-12);
    CHECK_NEAR(ce, (5.0 * (L - 2.0) + 3.0 * L) / 8.0, 1e-6);

    /* A label beyond the model's outputs is refused before any kernel sees it. */
    d->num_classes = 5;
    CHECK_ERR(fed_evaluate(m, d, 0, &loss, &r), FED_ESHAPE);
    CHECK_CONTAINS(fed_errmsg(), "5 classes; the model has 4 outputs");
    fed_data_destroy(&d);
    fed_model_destroy(&m);
}

typedef struct recorder {
    fed_model *m;
    float *snapshot; /* parameters after the best epoch */
    double val_loss[256];
    size_t epochs;
    size_t stop_after; /* on_epoch returns false after this epoch (0: never) */
} recorder;

static bool record(void *user, const fed_epoch_stats *s) {
    recorder *r = user;
    r->val_loss[r->epochs++] = s->val_loss;
    if (s->best)
        memcpy(r->snapshot, fed_model_params_const(r->m),
               fed_model_num_params(r->m) * sizeof(float));
    return r->stop_after == 0 || s->epoch < r->stop_after;
}

TEST(early_stopping_restores_best) {
    fed_model *m = model_from("{\"input\":[8],\"layers\":[{\"type\":\"linear\",\"out\":64},"
                              "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":4}]}",
                              3);
    fed_dataset *tr = noise_set(32, 8, 4, 1), *va = noise_set(64, 8, 4, 2);
    recorder rec = {m, fed_mallocarray(fed_model_num_params(m), sizeof(float)), {0}, 0, 0};
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 200;
    c.batch = 8;
    c.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 0.01f);
    c.patience = 3;
    c.on_epoch = record;
    c.user = &rec;
    fed_fit_result r;
    CHECK_OK(fed_fit(m, tr, va, &c, &r));
    CHECK(r.stopped_early);
    CHECK(r.best_epoch >= 1);
    CHECK_SIZE(r.epochs_run, r.best_epoch + 3);
    CHECK_SIZE(rec.epochs, r.epochs_run);
    CHECK_SIZE(r.steps, r.epochs_run * 4);
    size_t argmin = 0;
    for (size_t e = 1; e < rec.epochs; e++)
        if (rec.val_loss[e] < rec.val_loss[argmin]) argmin = e;
    CHECK_SIZE(r.best_epoch, argmin + 1);
    CHECK(r.best_val_loss == rec.val_loss[argmin]);
    CHECK_MEM(fed_model_params_const(m), rec.snapshot, fed_model_num_params(m) * sizeof(float));
    /* The last epoch's validation loss is worse than the best: restoring mattered. */
    CHECK(rec.val_loss[rec.epochs - 1] > r.best_val_loss);

    /* Without restore_best the last epoch's weights stay. */
    fed_model_init(m, 3);
    c.restore_best = false;
    rec.epochs = 0;
    CHECK_OK(fed_fit(m, tr, va, &c, &r));
    CHECK(memcmp(fed_model_params_const(m), rec.snapshot,
                 fed_model_num_params(m) * sizeof(float)) != 0);

    /* A callback returning false stops after that epoch. */
    fed_model_init(m, 3);
    c.patience = 0;
    rec.epochs = 0;
    rec.stop_after = 2;
    CHECK_OK(fed_fit(m, tr, va, &c, &r));
    CHECK_SIZE(r.epochs_run, 2);
    CHECK(!r.stopped_early);
    fed_free(rec.snapshot);
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_model_destroy(&m);
}

static const char *const mlp3 =
    "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":64},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"out\":64},{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":4}]}";

TEST(learns_and_is_deterministic) {
    fed_dataset *tr = spirals(2000, 4, false, 1), *va = spirals(500, 4, false, 2);
    uint64_t h[3];
    double acc = 0.0;
    for (int run = 0; run < 3; run++) {
        fed_model *m = model_from(mlp3, 7);
        fed_model_set_dropout(m, 0.0f);
        fed_fit_config c = fed_fit_defaults();
        c.epochs = 25;
        c.schedule = fed_fit_schedule(FED_SCHED_COSINE, 0.01f);
        c.augment.noise_std = 0.01f;
        c.seed = run == 2 ? 99 : 5;
        fed_fit_result r;
        CHECK_OK(fed_fit(m, tr, va, &c, &r));
        CHECK_SIZE(r.epochs_run, 25);
        CHECK_SIZE(r.steps, 25 * 63);
        h[run] = fnv1a(fed_model_params_const(m), fed_model_num_params(m) * sizeof(float));
        if (run == 0) {
            fed_eval_result e;
            CHECK_OK(fed_evaluate(m, va, 0, &c.loss, &e));
            acc = e.accuracy;
            CHECK(e.macro_f1 > 0.95);
            fed_eval_result_free(&e);
        }
        fed_model_destroy(&m);
    }
    printf("4-arm spirals: validation accuracy %.4f\n", acc);
    CHECK(acc >= 0.97);
    CHECK(h[0] == h[1]); /* same seed, same bits */
    CHECK(h[0] != h[2]); /* another seed, another order */
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
}

/* An IDX table of n rows of 16 bytes and labels 0..3 (class = the largest of the first
 * four bytes' index), written to buf: images then labels. */
static size_t idx_pair(unsigned char *buf, size_t n, uint64_t seed, size_t *labels_at) {
    size_t at = 0;
    const unsigned char head[4] = {0, 0, 8, 2};
    memcpy(buf, head, 4);
    at = 4;
    const uint32_t dims[2] = {(uint32_t)n, 16};
    for (int k = 0; k < 2; k++)
        for (int b = 3; b >= 0; b--) buf[at++] = (unsigned char)(dims[k] >> (8 * b));
    uint64_t x = seed;
    unsigned char *img = buf + at;
    for (size_t i = 0; i < n * 16; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        img[i] = (unsigned char)(x >> 56);
    }
    at += n * 16;
    *labels_at = at;
    const unsigned char lhead[4] = {0, 0, 8, 1};
    memcpy(buf + at, lhead, 4);
    at += 4;
    for (int b = 3; b >= 0; b--) buf[at++] = (unsigned char)(n >> (8 * b));
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t j = 1; j < 4; j++)
            if (img[i * 16 + j] > img[i * 16 + best]) best = j;
        buf[at++] = (unsigned char)best;
    }
    return at;
}

/* A byte set (IDX bytes, converted per batch) trains, validates and evaluates to the
 * very bits of its float twin: the simulator's data path against the plain one. */
TEST(byte_set_trains_as_floats) {
    static unsigned char buf[8 + 4 + 300 * 16 + 8 + 300];
    size_t lat = 0, len = idx_pair(buf, 300, 3, &lat);
    fed_dataset *f = NULL, *b = NULL, *ft = NULL, *fv = NULL, *bt = NULL, *bv = NULL;
    CHECK_OK(fed_data_parse_idx(&f, buf, lat, buf + lat, len - lat, "mem"));
    CHECK_OK(fed_data_parse_idx_bytes(&b, buf, lat, buf + lat, len - lat, "mem"));
    if (!f || !b) goto done;
    CHECK(b->x == NULL);
    fed_standardizer *s = NULL;
    CHECK_OK(fed_std_fit(&s, f));
    if (s) {
        CHECK_OK(fed_std_apply(s, f));
        CHECK_OK(fed_std_apply(s, b));
        fed_std_destroy(&s);
    }
    CHECK_OK(fed_data_split(f, 0.2, 0.0, 4, &ft, &fv, NULL));
    CHECK_OK(fed_data_split(b, 0.2, 0.0, 4, &bt, &bv, NULL));
    if (!ft || !bt || !fv || !bv) goto done;
    CHECK(bt->x == NULL && bv->x == NULL);
    const char *spec = "{\"input\":[16],\"layers\":[{\"type\":\"linear\",\"out\":32},"
                       "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":4}]}";
    uint64_t h[2];
    double loss[2], acc[2];
    for (int k = 0; k < 2; k++) {
        fed_model *m = model_from(spec, 11);
        fed_fit_config c = fed_fit_defaults();
        c.epochs = 20;
        c.batch = 10;
        c.eval_batch = 7; /* validation in partial chunks */
        c.augment.noise_std = 0.01f;
        fed_fit_result r;
        CHECK_OK(fed_fit(m, k ? bt : ft, k ? bv : fv, &c, &r));
        h[k] = fnv1a(fed_model_params_const(m), fed_model_num_params(m) * sizeof(float));
        CHECK_OK(fed_evaluate_ce(m, k ? bv : fv, 7, &loss[k], &acc[k]));
        fed_model_destroy(&m);
    }
    CHECK(h[0] == h[1]);
    CHECK(loss[0] == loss[1] && acc[0] == acc[1]);
    printf("byte set: validation accuracy %.4f (4 classes)\n", acc[0]);
    CHECK(acc[0] > 0.5); /* it learned something: the check is not vacuous */
done:
    fed_data_destroy(&f);
    fed_data_destroy(&b);
    fed_data_destroy(&ft);
    fed_data_destroy(&fv);
    fed_data_destroy(&bt);
    fed_data_destroy(&bv);
}

/* stop_at: no step starts after it. The config is read at every step, so on_step moves
 * it into the past after the third step. */
static fed_fit_config *stop_cfg;
static void stop_after_three(void *user, size_t done, size_t total) {
    (void)user;
    (void)total;
    if (done == 3) stop_cfg->stop_at = 1.0; /* monotonic second 1: long past */
}

TEST(stop_at_deadline) {
    fed_dataset *tr = spirals(200, 4, false, 1); /* batch 32: 7 steps an epoch, the last 8 */
    fed_model *m = model_from(mlp3, 7);
    uint64_t before = fnv1a(fed_model_params_const(m), fed_model_num_params(m) * sizeof(float));
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 5;
    c.stop_at = 1.0; /* already past: not one step */
    fed_fit_result r;
    CHECK_OK(fed_fit(m, tr, NULL, &c, &r));
    CHECK_SIZE(r.steps, 0);
    CHECK_SIZE(r.examples, 0);
    CHECK_SIZE(r.epochs_run, 0);
    CHECK(r.out_of_time);
    CHECK(fnv1a(fed_model_params_const(m), fed_model_num_params(m) * sizeof(float)) == before);
    c.stop_at = 0.0;
    c.on_step = stop_after_three;
    stop_cfg = &c;
    CHECK_OK(fed_fit(m, tr, NULL, &c, &r));
    CHECK_SIZE(r.steps, 3);
    CHECK_SIZE(r.examples, 3 * 32);
    CHECK_SIZE(r.epochs_run, 1); /* the epoch in progress counts, over its 3 steps */
    CHECK(r.out_of_time);
    CHECK(isfinite(r.final_train_loss));
    c.stop_at = 0.0;
    c.on_step = NULL;
    CHECK_OK(fed_fit(m, tr, NULL, &c, &r));
    CHECK_SIZE(r.steps, 5 * 7);
    CHECK_SIZE(r.examples, 5 * 200);
    CHECK(!r.out_of_time);
    fed_model_destroy(&m);
    fed_data_destroy(&tr);
}

TEST(frozen_backbone_untouched) {
    fed_model *m = model_from(mlp3, 11);
    fed_dataset *tr = spirals(400, 4, false, 3);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "0.*", false), 2);
    CHECK_SIZE(fed_model_set_trainable_glob(m, "2.*", false), 2);
    size_t np = fed_model_num_params(m);
    float *before = fed_mallocarray(np, sizeof(float));
    memcpy(before, fed_model_params_const(m), np * sizeof(float));
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 3;
    c.optim = fed_optim_defaults(FED_OPT_ADAMW); /* decoupled decay must skip frozen ones too */
    fed_fit_result r;
    CHECK_OK(fed_fit(m, tr, NULL, &c, &r));
    CHECK(isnan(r.best_val_loss));
    CHECK_SIZE(r.best_epoch, 0);
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        int same = memcmp(before + t->offset, fed_model_params_const(m) + t->offset,
                          t->numel * sizeof(float)) == 0;
        CHECK_INT(same, !t->trainable);
    }
    fed_free(before);
    fed_data_destroy(&tr);
    fed_model_destroy(&m);
}

/* Epochs until the validation accuracy first reaches target (epochs + 1 if never). */
typedef struct until {
    double target;
    size_t reached;
} until;

static bool watch(void *user, const fed_epoch_stats *s) {
    until *u = user;
    if (s->val_acc >= u->target && !u->reached) u->reached = s->epoch;
    return !u->reached;
}

TEST(pretrain_then_finetune_is_faster) {
    /* Public task: 4-arm spirals, plenty of data. */
    fed_dataset *pub = spirals(3000, 4, false, 21);
    fed_model *pre = model_from(mlp3, 13);
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 30;
    c.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 0.01f);
    fed_fit_result r;
    CHECK_OK(fed_fit(pre, pub, NULL, &c, &r));

    /* Private task: which pair of arms a point lies on, from only 80 examples. */
    fed_dataset *priv = spirals(80, 4, true, 22), *val = spirals(1000, 4, true, 23);
    fed_model *tuned = NULL;
    CHECK_OK(fed_model_new_head(&tuned, pre, 2, 5));
    CHECK_SIZE(fed_model_output_size(tuned), 2);
    fed_model *scratch = model_from(mlp3, 13);
    fed_model *scratch2 = NULL;
    CHECK_OK(fed_model_new_head(&scratch2, scratch, 2, 5)); /* same arch, random backbone */

    until u_pre = {0.9, 0}, u_scratch = {0.9, 0};
    fed_fit_config f = fed_fit_defaults();
    f.epochs = 60;
    f.batch = 16;
    f.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 0.003f);
    f.on_epoch = watch;
    f.restore_best = false;
    f.user = &u_pre;
    CHECK_OK(fed_fit(tuned, priv, val, &f, &r));
    f.user = &u_scratch;
    CHECK_OK(fed_fit(scratch2, priv, val, &f, &r));
    size_t e_pre = u_pre.reached ? u_pre.reached : 61;
    size_t e_scratch = u_scratch.reached ? u_scratch.reached : 61;
    printf("epochs to 90%% validation accuracy: pre-trained %zu, from scratch %zu\n", e_pre,
           e_scratch);
    CHECK(u_pre.reached > 0);
    CHECK(e_pre < e_scratch);
    fed_model_destroy(&scratch2);
    fed_model_destroy(&scratch);
    fed_model_destroy(&tuned);
    fed_model_destroy(&pre);
    fed_data_destroy(&pub);
    fed_data_destroy(&priv);
    fed_data_destroy(&val);
}

TEST(new_head_clone_dropout) {
    fed_model *m = model_from("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":5},"
                              "{\"type\":\"dropout\",\"p\":0.5},{\"type\":\"linear\",\"out\":3},"
                              "{\"type\":\"relu\"}]}",
                              2);
    fed_model_set_trainable(m, 0, false);
    fed_model *h = NULL;
    CHECK_OK(fed_model_new_head(&h, m, 7, 9));
    CHECK_SIZE(fed_model_output_size(h), 7);
    CHECK_SIZE(fed_model_num_params(h), 4 * 5 + 5 + 5 * 7 + 7);
    const fed_tensor *w0 = fed_model_find(h, "0.weight"), *w2 = fed_model_find(h, "2.weight");
    CHECK(!w0->trainable); /* flags carried over */
    CHECK(w2->trainable);
    CHECK_SIZE(w2->shape[0], 7);
    CHECK_MEM(fed_model_params_const(h) + w0->offset,
              fed_model_params_const(m) + fed_model_find(m, "0.weight")->offset,
              20 * sizeof(float));
    CHECK_SIZE(fed_model_set_dropout(h, 0.25f), 1);
    CHECK(fed_arch_layer(fed_model_arch(h), 1)->p == 0.25f);

    fed_model *c = NULL;
    CHECK_OK(fed_model_clone(&c, h));
    CHECK_MEM(fed_model_params_const(c), fed_model_params_const(h),
              fed_model_num_params(h) * sizeof(float));
    CHECK(!fed_model_find(c, "0.weight")->trainable);
    CHECK(fed_arch_layer(fed_model_arch(c), 1)->p == 0.25f);
    fed_model_destroy(&c);
    fed_model_destroy(&h);

    /* A new head of the same size from the seed the model was initialised with is not
     * the model's initial head. */
    CHECK_OK(fed_model_new_head(&h, m, 3, 2));
    const fed_tensor *hw = fed_model_find(h, "2.weight"), *mw = fed_model_find(m, "2.weight");
    size_t same = 0;
    for (size_t i = 0; i < hw->numel; i++)
        same +=
            fed_model_params_const(h)[hw->offset + i] == fed_model_params_const(m)[mw->offset + i];
    CHECK_SIZE(same, 0);
    fed_model_destroy(&h);
    fed_model_destroy(&m);

    /* A head followed by a layer with parameters, or no linear layer at all. */
    m = model_from("{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":5},"
                   "{\"type\":\"layernorm\"}]}",
                   2);
    CHECK_ERR(fed_model_new_head(&h, m, 3, 1), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "layer 1 (layernorm) follows the last linear layer 0");
    CHECK(h == NULL);
    fed_model_destroy(&m);
    m = model_from("{\"input\":[1,4,4],\"layers\":[{\"type\":\"conv2d\",\"out\":2,\"k\":3}]}", 2);
    CHECK_ERR(fed_model_new_head(&h, m, 3, 1), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "no linear layer");
    fed_model_destroy(&m);
}

TEST(config_and_data_errors) {
    fed_model *m = model_from(mlp3, 1);
    fed_dataset *tr = spirals(40, 4, false, 1), *wide = noise_set(10, 3, 2, 1);
    fed_fit_config c = fed_fit_defaults();
    fed_fit_result r;
    c.epochs = 0;
    CHECK_ERR(fed_fit(m, tr, NULL, &c, &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "epochs");
    c = fed_fit_defaults();
    c.patience = 2;
    CHECK_ERR(fed_fit(m, tr, NULL, &c, &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "needs a validation set");
    c = fed_fit_defaults();
    c.augment.shift = 2;
    CHECK_ERR(fed_fit(m, tr, NULL, &c, &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "shift and flip augment images");
    c = fed_fit_defaults();
    CHECK_ERR(fed_fit(m, wide, NULL, &c, &r), FED_ESHAPE);
    CHECK_CONTAINS(fed_errmsg(), "training data has 3 features per example; the model takes 2");
    CHECK_ERR(fed_fit(m, tr, wide, &c, &r), FED_ESHAPE);
    CHECK_CONTAINS(fed_errmsg(), "validation data has 3 features");
    /* A learning rate that blows the weights up ends with a clear error. */
    c.optim = fed_optim_defaults(FED_OPT_SGD);
    c.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 1e30f);
    c.epochs = 5;
    CHECK_ERR(fed_fit(m, tr, NULL, &c, &r), FED_ENONFINITE);
    CHECK_CONTAINS(fed_errmsg(), "the training loss is not finite");
    fed_data_destroy(&tr);
    fed_data_destroy(&wide);
    fed_model_destroy(&m);
}

/* Predicted tokens of every epoch, as fed_fit reports them. */
static bool count_predictions(void *user, const fed_epoch_stats *e) {
    ((size_t *)user)[e->epoch - 1] = e->predictions;
    return true;
}

TEST(language_model) {
    /* A tiny GPT on texts of the cycle 0 1 2 3 0 ... of lengths 2..5 (T 5), labels all 0:
     * fed_fit and fed_evaluate take the next-token loss, means per predicted token. */
    fed_model *m = model_from(
        "{\"input\":[5],\"layers\":[{\"type\":\"embedding\",\"vocab\":6,\"dim\":8,\"pad\":true,"
        "\"name\":\"wte\"},{\"type\":\"positions\",\"kind\":\"learned\"},"
        "{\"type\":\"residual\",\"layers\":[{\"type\":\"layernorm\"},{\"type\":\"attention\","
        "\"heads\":2,\"causal\":true}]},{\"type\":\"residual\",\"layers\":[{\"type\":"
        "\"layernorm\"},{\"type\":\"linear\",\"out\":32},{\"type\":\"gelu\"},{\"type\":\"linear\","
        "\"out\":8}]},{\"type\":\"layernorm\"},{\"type\":\"lmhead\",\"tie\":\"wte\"}]}",
        3);
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 12, 5, 1));
    if (!d) return;
    size_t tokens = 0;
    for (size_t i = 0; i < 12; i++) {
        size_t len = 2 + i % 4;
        for (size_t t = 0; t < 5; t++) d->x[i * 5 + t] = t < len ? (float)((i + t) % 4) : -1.0f;
        d->y[i] = 0;
        tokens += len - 1;
    }
    CHECK_SIZE(tokens, 3 * (1 + 2 + 3 + 4));
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 40;
    c.batch = 5;
    c.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 1e-2f);
    c.restore_best = false;
    size_t preds[40] = {0};
    c.on_epoch = count_predictions;
    c.user = preds;
    fed_fit_result r;
    CHECK_OK(fed_fit(m, d, d, &c, &r));
    CHECK_SIZE(preds[0], tokens);
    CHECK_SIZE(preds[39], tokens);
    CHECK(r.best_val_loss < 0.2);
    fed_eval_result e, e5;
    CHECK_OK(fed_evaluate(m, d, 0, &c.loss, &e));
    CHECK_OK(fed_evaluate(m, d, 5, &c.loss, &e5)); /* batches of 11, 12 and 7 tokens */
    CHECK_SIZE(e.predictions, tokens);
    CHECK_SIZE(e.num_classes, 0);
    CHECK(e.confusion == NULL);
    CHECK_NEAR(e.perplexity, exp(e.loss), 1e-12);
    CHECK_NEAR(e5.loss, e.loss, 1e-6);
    CHECK_NEAR(e.accuracy, 1.0, 0.0);
    double loss = 0.0, acc = 0.0;
    CHECK_OK(fed_evaluate_ce(m, d, 0, &loss, &acc));
    CHECK_NEAR(loss, e.loss, 0.0);
    fed_eval_result_free(&e);
    fed_eval_result_free(&e5);
    /* Allocation failures anywhere in a language model's fit and evaluation. */
    c.epochs = 1;
    c.on_epoch = NULL;
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_fit(m, d, d, &c, &r));
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        if (ALLOC_TRY(f, fed_evaluate(m, d, 5, &c.loss, &e)) == FED_OK) fed_eval_result_free(&e);
    }
    /* Texts of one token predict nothing: no perplexity to report. */
    fed_dataset *ones = NULL;
    CHECK_OK(fed_data_new(&ones, 2, 5, 1));
    if (ones) {
        for (size_t i = 0; i < 10; i++) ones->x[i] = i % 5 ? -1.0f : 2.0f;
        ones->y[0] = ones->y[1] = 0;
        fed_errclear();
        CHECK_ERR(fed_evaluate(m, ones, 0, &c.loss, &e), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), "the evaluation set has no token to predict");
    }
    fed_data_destroy(&ones);
    /* Label smoothing has no meaning for a language model. */
    c.loss.label_smoothing = 0.1f;
    fed_errclear();
    CHECK_ERR(fed_fit(m, d, NULL, &c, &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "label smoothing: not for a language model");
    fed_data_destroy(&d);
    fed_model_destroy(&m);
}

TEST(errprefix) {
    CHECK_ERR(fed_errorf(FED_EFORMAT, "line 3: bad"), FED_EFORMAT);
    CHECK_ERR(fed_errprefix(FED_EFORMAT, "%s", "a.json"), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "a.json: line 3: bad");
    fed_errclear();
    CHECK_ERR(fed_errprefix(FED_ENOMEM, "loading %d", 7), FED_ENOMEM);
    CHECK_STR(fed_errmsg(), "loading 7: out of memory");
}

/* Central evaluation on several threads: every thread count gives the single thread's
 * result to the last bit (the loss summed in batch order, the same confusion matrix),
 * the hand-computed one included; a bad label is the same error. */
TEST(evaluate_threads_same_bits) {
    fed_model *m = model_from(mlp3, 7);
    fed_dataset *d = spirals(1000, 4, false, 3); /* 16 batches of 64, the last of 40 */
    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.1f};
    fed_eval_result one, r;
    CHECK_OK(fed_evaluate_threads(m, d, 64, &loss, 1, &one));
    CHECK(one.accuracy > 0.0 && one.accuracy < 1.0);
    const size_t counts[] = {0, 2, 3, 16, 100};
    for (size_t t = 0; t < sizeof counts / sizeof *counts; t++) {
        CHECK_OK(fed_evaluate_threads(m, d, 64, &loss, counts[t], &r));
        CHECK(memcmp(&r.loss, &one.loss, sizeof r.loss) == 0);
        CHECK(r.accuracy == one.accuracy);
        CHECK(r.macro_f1 == one.macro_f1);
        for (size_t i = 0; i < 16; i++) CHECK_SIZE(r.confusion[i], one.confusion[i]);
        fed_eval_result_free(&r);
    }
    double ce1, acc1, ce3, acc3;
    CHECK_OK(fed_evaluate_ce(m, d, 0, &ce1, &acc1));
    CHECK_OK(fed_evaluate_ce_threads(m, d, 0, 3, &ce3, &acc3));
    CHECK(memcmp(&ce1, &ce3, sizeof ce1) == 0);
    CHECK(acc1 == acc3);
    d->y[777] = 4;
    d->num_classes = 4;
    CHECK_ERR(fed_evaluate_threads(m, d, 64, &loss, 3, &r), FED_ERANGE);
    CHECK_STR(fed_errmsg(), "example 777: label 4 outside [0, 4)");
    d->y[777] = 1;
    FOR_EACH_ALLOC_FAILURE(f) {
        if (ALLOC_TRY(f, fed_evaluate_threads(m, d, 64, &loss, 3, &r)) == FED_OK) {
            CHECK(memcmp(&r.loss, &one.loss, sizeof r.loss) == 0);
            fed_eval_result_free(&r);
        }
    }
    fed_eval_result_free(&one);
    fed_data_destroy(&d);
    fed_model_destroy(&m);
}

TEST(alloc_failures) {
    fed_model *m = model_from(mlp3, 1);
    fed_dataset *tr = spirals(64, 4, false, 1), *va = spirals(32, 4, false, 2);
    fed_fit_config c = fed_fit_defaults();
    c.epochs = 2;
    c.patience = 1;
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_fit_result r;
        ALLOC_TRY(f, fed_fit(m, tr, va, &c, &r));
    }
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_eval_result e;
        if (ALLOC_TRY(f, fed_evaluate(m, va, 0, &c.loss, &e)) == FED_OK) fed_eval_result_free(&e);
    }
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_model_destroy(&m);
}

int main(void) {
    RUN(evaluate_hand_computed);
    RUN(evaluate_threads_same_bits);
    RUN(early_stopping_restores_best);
    RUN(learns_and_is_deterministic);
    RUN(stop_at_deadline);
    RUN(frozen_backbone_untouched);
    RUN(pretrain_then_finetune_is_faster);
    RUN(new_head_clone_dropout);
    RUN(config_and_data_errors);
    RUN(language_model);
    RUN(errprefix);
    RUN(alloc_failures);
    RUN(byte_set_trains_as_floats);
    return test_report();
}
