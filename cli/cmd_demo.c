/* `fedtune demo`: trains an MLP on the built-in spirals task and prints the loss falling
 * and the held-out accuracy rising, epoch by epoch. Needs no data files: it is the
 * smoke test of an installation and a tour of the core's training options. Real data
 * and model files come with `fedtune train`. */
#include "cli/commands.h"
#include "cli/options.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/synthetic.h"
#include "core/train.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct demo_cfg {
    size_t samples;         /* examples generated, 80% train / 20% test */
    size_t classes;         /* spiral arms */
    double turns;           /* how often each arm winds around the origin */
    double noise;           /* angular noise of the spirals, radians */
    size_t hidden;          /* width of both hidden layers */
    double dropout;         /* dropout after each hidden layer */
    size_t epochs;          /* passes over the training set */
    size_t batch;           /* examples per step */
    const char *optimizer;  /* sgd | adam | adamw */
    double lr;              /* base learning rate */
    double momentum;        /* SGD momentum */
    double weight_decay;    /* L2 (sgd, adam) or decoupled (adamw) decay */
    double clip_norm;       /* global gradient-norm clip, 0 = off */
    const char *schedule;   /* constant | step | cosine */
    size_t warmup;          /* linear warm-up steps */
    double label_smoothing; /* cross-entropy label smoothing */
    long seed;              /* data, initialisation and shuffling seed */
    size_t threads;         /* OpenBLAS threads */
} demo_cfg;

#define F(field) offsetof(demo_cfg, field)
static const opt_spec demo_opts[] = {
    {"samples", OPT_SIZE, "3000", 10, 10000000, NULL, F(samples), "examples to generate"},
    {"classes", OPT_SIZE, "3", 2, 16, NULL, F(classes), "spiral arms (classes)"},
    {"turns", OPT_FLOAT, "2", 0.1, 10, NULL, F(turns), "turns of each arm (harder when more)"},
    {"noise", OPT_FLOAT, "0.2", 0, 2, NULL, F(noise), "angular noise of the arms, radians"},
    {"hidden", OPT_SIZE, "64", 1, 4096, NULL, F(hidden), "units in each of the 2 hidden layers"},
    {"dropout", OPT_FLOAT, "0", 0, 0.95, NULL, F(dropout), "dropout after each hidden layer"},
    {"epochs", OPT_SIZE, "30", 1, 100000, NULL, F(epochs), "passes over the training set"},
    {"batch", OPT_SIZE, "32", 1, 65536, NULL, F(batch), "examples per step"},
    {"optimizer", OPT_CHOICE, "adam", 1, 0, "sgd|adam|adamw", F(optimizer), "update rule"},
    {"lr", OPT_FLOAT, "0.01", 1e-9, 10, NULL, F(lr), "base learning rate"},
    {"momentum", OPT_FLOAT, "0.9", 0, 0.999, NULL, F(momentum), "SGD momentum"},
    {"weight-decay", OPT_FLOAT, "0", 0, 1, NULL, F(weight_decay),
     "weight decay (decoupled for adamw)"},
    {"clip-norm", OPT_FLOAT, "0", 0, 1e6, NULL, F(clip_norm), "clip the gradient norm; 0 = off"},
    {"schedule", OPT_CHOICE, "cosine", 1, 0, "constant|step|cosine", F(schedule),
     "learning-rate schedule"},
    {"warmup", OPT_SIZE, "0", 0, 1000000, NULL, F(warmup), "linear warm-up steps"},
    {"label-smoothing", OPT_FLOAT, "0", 0, 0.99, NULL, F(label_smoothing),
     "cross-entropy label smoothing"},
    {"seed", OPT_INT, "1", 0, 9007199254740991.0, NULL, F(seed), "random seed"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table demo_table = {
    "demo",
    "Train a small MLP on a built-in synthetic task (interleaved spirals) and print "
    "the loss falling.",
    demo_opts, NULL};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The architecture as JSON: 2 -> hidden -> hidden -> classes, ReLU, optional dropout. */
static void demo_arch(char *buf, size_t len, const demo_cfg *c) {
    char drop[64] = "";
    if (c->dropout > 0.0)
        snprintf(drop, sizeof drop, "{\"type\":\"dropout\",\"p\":%g},", c->dropout);
    snprintf(buf, len,
             "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":%zu},{\"type\":\"relu\"},%s"
             "{\"type\":\"linear\",\"out\":%zu},{\"type\":\"relu\"},%s"
             "{\"type\":\"linear\",\"out\":%zu}]}",
             c->hidden, drop, c->hidden, drop, c->classes);
}

/* Mean loss and accuracy over (x, y) in chunks of `batch`. */
static fed_err evaluate(fed_model *m, fed_arena *a, const float *x, const int32_t *y, size_t n,
                        size_t batch, const fed_loss_config *loss, double *mean_loss, double *acc) {
    double total = 0.0;
    size_t correct = 0;
    for (size_t s = 0; s < n; s += batch) {
        size_t nb = n - s < batch ? n - s : batch;
        fed_batch b = {x + 2 * s, y + s, NULL, nb};
        fed_step_stats st;
        fed_err err = fed_eval_batch(m, a, &b, loss, &st);
        if (err) return err;
        total += st.loss * (double)nb;
        correct += st.correct;
    }
    *mean_loss = total / (double)n;
    *acc = (double)correct / (double)n;
    return FED_OK;
}

static fed_err run(const demo_cfg *c) {
    fed_err err;
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_optim *o = NULL;
    fed_arena *arena = NULL;
    float *x = NULL, *bx = NULL;
    int32_t *y = NULL, *by = NULL;
    size_t *order = NULL;
    const size_t n = c->samples, ntest = n / 5, ntrain = n - ntest; /* samples >= 10 */

    char spec[512];
    demo_arch(spec, sizeof spec, c);
    if ((err = fed_arch_parse(&arch, spec)) || (err = fed_model_new(&m, arch))) goto done;
    fed_model_init(m, (uint64_t)c->seed);

    fed_optim_config oc;
    fed_opt_kind kind;
    if ((err = fed_opt_parse(c->optimizer, &kind))) goto done;
    oc = fed_optim_defaults(kind);
    if (kind == FED_OPT_SGD) oc.momentum = (float)c->momentum;
    oc.weight_decay = (float)c->weight_decay;
    oc.clip_norm = (float)c->clip_norm;
    if ((err = fed_optim_new(&o, m, &oc))) goto done;

    size_t batch = c->batch < ntrain ? c->batch : ntrain;
    size_t steps_per_epoch = (ntrain + batch - 1) / batch;
    fed_schedule sched = fed_schedule_constant((float)c->lr);
    if ((err = fed_sched_parse(c->schedule, &sched.kind))) goto done;
    sched.warmup = c->warmup;
    sched.step_size = steps_per_epoch * (c->epochs / 3 ? c->epochs / 3 : 1);
    sched.gamma = 0.1f;
    sched.total =
        c->epochs * steps_per_epoch > c->warmup ? c->epochs * steps_per_epoch - c->warmup : 1;
    if ((err = fed_schedule_check(&sched))) goto done;

    err = FED_ENOMEM;
    x = fed_mallocarray(n, 2 * sizeof(float));
    y = fed_mallocarray(n, sizeof(int32_t));
    bx = fed_mallocarray(batch, 2 * sizeof(float));
    by = fed_mallocarray(batch, sizeof(int32_t));
    order = fed_mallocarray(ntrain, sizeof(size_t));
    if (!x || !y || !bx || !by || !order) goto done;
    if ((err = fed_arena_new(&arena, 0))) goto done;
    fed_blas_set_threads((int)c->threads);

    fed_rng data_rng = fed_rng_stream((uint64_t)c->seed, 1);
    fed_rng shuffle_rng = fed_rng_stream((uint64_t)c->seed, 2);
    fed_rng dropout_rng = fed_rng_stream((uint64_t)c->seed, 3);
    fed_synth_spirals(x, y, n, c->classes, (float)c->turns, (float)c->noise, &data_rng);
    const float *xtest = x + 2 * ntrain;
    const int32_t *ytest = y + ntrain;
    for (size_t i = 0; i < ntrain; i++) order[i] = i;

    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, (float)c->label_smoothing};
    double test_loss, test_acc = 0.0, start_acc;
    if ((err = evaluate(m, arena, xtest, ytest, ntest, 256, &loss, &test_loss, &start_acc)))
        goto done;
    printf("demo: %zu-class spirals, %zu train / %zu test examples; MLP 2-%zu-%zu-%zu "
           "(%zu parameters); %s, lr %g, %s schedule, batch %zu\n",
           c->classes, ntrain, ntest, c->hidden, c->hidden, c->classes, fed_model_num_params(m),
           c->optimizer, c->lr, c->schedule, batch);
    printf("epoch %3d  %-17s test loss %.4f  test acc %5.1f%%\n", 0, "", test_loss,
           100.0 * start_acc);

    size_t step = 0;
    double t_all = now_s();
    for (size_t e = 1; e <= c->epochs; e++) {
        double t0 = now_s(), train_loss = 0.0;
        fed_rng_shuffle(&shuffle_rng, order, ntrain);
        for (size_t s = 0; s < ntrain; s += batch) {
            size_t nb = ntrain - s < batch ? ntrain - s : batch;
            for (size_t j = 0; j < nb; j++) {
                memcpy(bx + 2 * j, x + 2 * order[s + j], 2 * sizeof(float));
                by[j] = y[order[s + j]];
            }
            fed_batch b = {bx, by, NULL, nb};
            fed_step_stats st;
            float lr = fed_schedule_lr(&sched, step++);
            if ((err = fed_train_step(m, o, arena, &b, &loss, lr, &dropout_rng, &st))) goto done;
            train_loss += st.loss * (double)nb;
        }
        double dt = now_s() - t0;
        if ((err = evaluate(m, arena, xtest, ytest, ntest, 256, &loss, &test_loss, &test_acc)))
            goto done;
        printf("epoch %3zu  train loss %.4f  test loss %.4f  test acc %5.1f%%  %6.3f s  "
               "%8.0f ex/s\n",
               e, train_loss / (double)ntrain, test_loss, 100.0 * test_acc, dt,
               (double)ntrain / (dt > 0 ? dt : 1e-9));
        fflush(stdout);
    }
    printf("demo: test accuracy %.1f%% -> %.1f%% in %zu epochs, %.2f s\n", 100.0 * start_acc,
           100.0 * test_acc, c->epochs, now_s() - t_all);
    err = FED_OK;
done:
    fed_free(order);
    fed_free(by);
    fed_free(bx);
    fed_free(y);
    fed_free(x);
    fed_arena_destroy(&arena);
    fed_optim_destroy(&o);
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    return err;
}

int cmd_demo(int argc, char **argv) {
    demo_cfg c;
    memset(&c, 0, sizeof c);
    fed_err err = opt_parse(&demo_table, &c, argc, argv);
    if (err == FED_ECANCELED) {
        opt_release();
        return 0;
    }
    if (!err) err = run(&c);
    opt_release();
    return err ? cli_fail("demo", err) : 0;
}
