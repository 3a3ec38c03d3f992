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
#include "dataset/synthetic.h"
#include "dataset/dataset.h"
#include "training/fit.h"
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

static bool print_epoch(void *user, const fed_epoch_stats *e) {
    (void)user;
    printf("epoch %3zu  train loss %.4f  test loss %.4f  test acc %5.1f%%  %6.3f s  "
           "%8.0f ex/s\n",
           e->epoch, e->train_loss, e->val_loss, 100.0 * e->val_acc, e->seconds, e->examples_per_s);
    fflush(stdout);
    return true;
}

/* The spirals, 80% train / 20% test, and core's training loop with the held-out part as
 * its validation set (no early stopping: the demo shows every epoch). */
static fed_err run(const void *cfg) {
    const demo_cfg *c = cfg;
    fed_err err;
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_dataset *all = NULL, *train = NULL, *test = NULL;
    const size_t n = c->samples; /* >= 10 */

    char spec[512];
    demo_arch(spec, sizeof spec, c);
    if ((err = fed_arch_parse(&arch, spec)) || (err = fed_model_new(&m, arch))) goto done;
    fed_model_init(m, (uint64_t)c->seed);
    if ((err = fed_data_new(&all, n, 2, c->classes))) goto done;
    fed_rng data_rng = fed_rng_stream((uint64_t)c->seed, 1);
    fed_synth_spirals(all->x, all->y, n, c->classes, (float)c->turns, (float)c->noise, &data_rng);
    if ((err = fed_data_split(all, 0.0, 0.2, (uint64_t)c->seed, &train, NULL, &test))) goto done;

    fed_fit_config f = fed_fit_defaults();
    fed_opt_kind kind;
    fed_sched_kind sk;
    if ((err = fed_opt_parse(c->optimizer, &kind)) || (err = fed_sched_parse(c->schedule, &sk)))
        goto done;
    f.optim = fed_optim_defaults(kind);
    if (kind == FED_OPT_SGD) f.optim.momentum = (float)c->momentum;
    f.optim.weight_decay = (float)c->weight_decay;
    f.optim.clip_norm = (float)c->clip_norm;
    f.schedule = fed_fit_schedule(sk, (float)c->lr);
    f.schedule.warmup = c->warmup;
    f.epochs = c->epochs;
    f.batch = c->batch;
    f.loss.label_smoothing = (float)c->label_smoothing;
    f.restore_best = false;
    f.seed = (uint64_t)c->seed;
    f.on_epoch = print_epoch;
    fed_blas_set_threads((int)c->threads);

    fed_eval_result start;
    if ((err = fed_evaluate(m, test, 0, &f.loss, &start))) goto done;
    printf("demo: %zu-class spirals, %zu train / %zu test examples; MLP 2-%zu-%zu-%zu "
           "(%zu parameters); %s, lr %g, %s schedule, batch %zu\n",
           c->classes, train->n, test->n, c->hidden, c->hidden, c->classes, fed_model_num_params(m),
           c->optimizer, c->lr, c->schedule, c->batch < train->n ? c->batch : train->n);
    printf("epoch %3d  %-17s test loss %.4f  test acc %5.1f%%\n", 0, "", start.loss,
           100.0 * start.accuracy);
    double start_acc = start.accuracy;
    fed_eval_result_free(&start);
    fed_fit_result r;
    if ((err = fed_fit(m, train, test, &f, &r))) goto done;
    fed_eval_result end;
    if ((err = fed_evaluate(m, test, 0, &f.loss, &end))) goto done;
    printf("demo: test accuracy %.1f%% -> %.1f%% in %zu epochs, %.2f s\n", 100.0 * start_acc,
           100.0 * end.accuracy, r.epochs_run, r.seconds);
    fed_eval_result_free(&end);
done:
    fed_data_destroy(&test);
    fed_data_destroy(&train);
    fed_data_destroy(&all);
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    return err;
}

int cmd_demo(int argc, char **argv) {
    demo_cfg c;
    return cli_run(&demo_table, &c, sizeof c, argc, argv, run);
}
