/* bench_sim: what the simulator's machinery costs over the bare training it drives.
 *
 * The same federation is run two ways in one process, alternately, `repeats` times:
 *   sim    fed_sim_run: the real coordinator on its thread, every virtual site's
 *          connection stepped on another, the sampled sites trained on `workers`
 *          threads; weights and deltas travel as messages over inproc:// (plaintext,
 *          or TLS with --tls), are checked, folded and applied by the coordinator;
 *   plain  the reference: the same number of sites per round, each trained on its own
 *          slice of the same partition with the same fit configuration
 *          (fed_train_spec_fit), on the same number of threads, from a copy of the
 *          global model; deltas summed under a lock and applied. No messages, no
 *          checks, no sampling machinery: the least a round can cost.
 * The figure is the median seconds per round of each, and their ratio sim / plain
 * (goal: <= 1.15). Data: MNIST (--data), or a synthetic set of the same shape.
 * Not a test; timings are reported, never asserted. */
#include "bench/benchlib.h"
#include "client/client.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "training/fit.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/train_spec.h"
#include "sim/partition.h"
#include "sim/sim.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_REPEATS 21

typedef struct options {
    const char *data; /* IDX images (labels derived), or "" for synthetic */
    const char *arch; /* preset or JSON */
    double clients, fraction, rounds, epochs, batch, workers, repeats;
    bool tls, quick, help;
} options;

static const bench_opt opt_table[] = {
    {"--data", BENCH_STRING, offsetof(options, data), 0, 0, "FILE",
     "MNIST training images (IDX; labels derived from the name); \"\" = synthetic"},
    {"--arch", BENCH_STRING, offsetof(options, arch), 0, 0, "SPEC", "model (preset or JSON)"},
    {"--clients", BENCH_INTEGER, offsetof(options, clients), 1, 100000, "N", "virtual sites"},
    {"--fraction", BENCH_NUMBER, offsetof(options, fraction), 1e-6, 1, "C", "sampled per round"},
    {"--rounds", BENCH_INTEGER, offsetof(options, rounds), 1, 100000, "R", "rounds per run"},
    {"--epochs", BENCH_INTEGER, offsetof(options, epochs), 1, 1000, "E", "local epochs"},
    {"--batch", BENCH_INTEGER, offsetof(options, batch), 1, 65536, "B", "local batch"},
    {"--workers", BENCH_INTEGER, offsetof(options, workers), 1, 256, "W", "training threads"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "K",
     "runs of each kind (medians)"},
    {"--tls", BENCH_FLAG, offsetof(options, tls), 0, 0, NULL, "the sim over the TLS channel"},
    {"--quick", BENCH_FLAG, offsetof(options, quick), 0, 0, NULL, "3 rounds, 1 repeat"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "this text"},
};
#define NOPT (sizeof opt_table / sizeof opt_table[0])

static void die(const char *what) {
    fprintf(stderr, "bench_sim: %s: %s\n", what, fed_errmsg());
    exit(1);
}

/* 60,000 examples of 784 values in 10 classes (class-dependent means), when no MNIST. */
static fed_dataset *synthetic(void) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, 60000, 784, 10)) die("synthetic data");
    fed_rng r;
    fed_rng_seed(&r, 11);
    for (size_t i = 0; i < d->n; i++) {
        int c = (int)(i % 10);
        d->y[i] = c;
        for (size_t j = 0; j < 784; j++)
            d->x[i * 784 + j] =
                0.1f * (float)((j + (size_t)c * 37) % 10) + 0.3f * fed_rng_uniform(&r);
    }
    return d;
}

/* ---- the plain loop --------------------------------------------------------------- */

typedef struct plain {
    fed_dataset **sites;   /* each site's slice */
    size_t nsites, k;      /* sites, sampled per round */
    const fed_model *glob; /* the global model (read while a round runs) */
    fed_fit_config fit;
    pthread_mutex_t mu;
    size_t next;   /* next sampled site to train */
    size_t *pick;  /* this round's sample */
    double *sum;   /* weighted delta sum (double: precision is not under test) */
    double weight; /* sum of weights */
    bool failed;
} plain;

static void *plain_worker(void *p) {
    plain *pl = p;
    fed_model *m = NULL;
    if (fed_model_clone(&m, pl->glob)) {
        pl->failed = true;
        return NULL;
    }
    size_t np = fed_model_num_params(m);
    float *delta = fed_mallocarray(np, sizeof(float));
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        size_t i = pl->next < pl->k ? pl->pick[pl->next++] : SIZE_MAX;
        pthread_mutex_unlock(&pl->mu);
        if (i == SIZE_MAX || !delta) break;
        memcpy(fed_model_params(m), fed_model_params_const(pl->glob), np * sizeof(float));
        fed_fit_result r;
        if (fed_fit(m, pl->sites[i], NULL, &pl->fit, &r)) {
            pl->failed = true;
            break;
        }
        const float *w = fed_model_params_const(m), *g = fed_model_params_const(pl->glob);
        for (size_t j = 0; j < np; j++) delta[j] = w[j] - g[j];
        double wt = (double)pl->sites[i]->n;
        pthread_mutex_lock(&pl->mu);
        for (size_t j = 0; j < np; j++) pl->sum[j] += wt * (double)delta[j];
        pl->weight += wt;
        pthread_mutex_unlock(&pl->mu);
    }
    fed_free(delta);
    fed_model_destroy(&m);
    return NULL;
}

/* Seconds per round of `rounds` plain rounds from m0. */
static double run_plain(plain *pl, const fed_model *m0, size_t rounds, size_t workers,
                        uint64_t seed) {
    fed_model *g = NULL;
    if (fed_model_clone(&g, m0)) die("clone");
    size_t np = fed_model_num_params(g);
    pl->glob = g;
    pl->sum = fed_calloc(np, sizeof(double));
    pl->pick = fed_calloc(pl->nsites, sizeof(size_t));
    size_t *perm = fed_calloc(pl->nsites, sizeof(size_t));
    pthread_t th[256];
    fed_rng rng;
    fed_rng_seed(&rng, seed);
    double t0 = fed_now_s();
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < pl->nsites; i++) perm[i] = i;
        fed_rng_shuffle(&rng, perm, pl->nsites);
        memcpy(pl->pick, perm, pl->k * sizeof(size_t));
        memset(pl->sum, 0, np * sizeof(double));
        pl->weight = 0;
        pl->next = 0;
        pl->fit.seed = seed + r + 1;
        for (size_t t = 0; t < workers; t++) pthread_create(&th[t], NULL, plain_worker, pl);
        for (size_t t = 0; t < workers; t++) pthread_join(th[t], NULL);
        float *w = fed_model_params(g);
        for (size_t j = 0; j < np; j++) w[j] += (float)(pl->sum[j] / pl->weight);
    }
    double s = (fed_now_s() - t0) / (double)rounds;
    if (pl->failed) die("plain training");
    fed_free(perm);
    fed_free(pl->pick);
    fed_free(pl->sum);
    fed_model_destroy(&g);
    return s;
}

int main(int argc, char **argv) {
    options o = {"data/mnist/train-images-idx3-ubyte",
                 "fedavg-2nn",
                 100,
                 0.1,
                 10,
                 1,
                 10,
                 2,
                 3,
                 false,
                 false,
                 false};
    options defaults = o;
    if (!bench_parse("bench_sim", opt_table, NOPT, &o, argc, argv)) return 2;
    if (o.help) {
        bench_usage(stdout, "bench_sim",
                    "seconds per round of fedtune sim against a plain training loop doing the "
                    "same work",
                    opt_table, NOPT, &defaults);
        return 0;
    }
    if (o.quick) {
        o.rounds = 3;
        o.repeats = 1;
    }
    fed_blas_set_threads(1);
    fed_dataset *data = NULL;
    if (o.data[0] && access(o.data, R_OK) == 0) {
        char labels[4096];
        snprintf(labels, sizeof labels, "%s", o.data);
        char *at = strstr(labels, "images-idx3");
        if (at) memcpy(at, "labels-idx1", 11);
        if (fed_data_load_idx(&data, o.data, labels)) die(o.data);
    } else {
        if (o.data[0]) fprintf(stderr, "bench_sim: %s not found: synthetic data\n", o.data);
        data = synthetic();
    }
    fed_arch *arch = NULL;
    fed_model *m0 = NULL;
    if (fed_arch_parse(&arch, o.arch)) die("--arch");
    if (fed_model_new(&m0, arch)) die("model");
    fed_model_init(m0, 1);
    const size_t nsites = (size_t)o.clients, workers = (size_t)o.workers;
    size_t k = (size_t)ceil(o.fraction * (double)nsites - 1e-9);
    if (k < 1) k = 1;
    const uint64_t seed = 7;

    /* The sites' slices, for the plain loop; the sim makes its own from the same spec. */
    fed_part_config pc = fed_part_default_config();
    pc.clients = nsites;
    pc.kind = FED_PART_IID;
    pc.seed = seed;
    fed_partition *part = NULL;
    if (fed_partition_make(&part, data->y, data->n, data->num_classes, &pc)) die("partition");
    plain pl;
    memset(&pl, 0, sizeof pl);
    pthread_mutex_init(&pl.mu, NULL);
    pl.nsites = nsites;
    pl.k = k;
    pl.sites = fed_calloc(nsites, sizeof *pl.sites);
    size_t *idx = fed_mallocarray(data->n, sizeof *idx);
    for (size_t i = 0; i < nsites; i++) {
        size_t a = part->offsets[i], b = part->offsets[i + 1];
        for (size_t j = a; j < b; j++) idx[j - a] = part->index[j];
        if (fed_data_subset(&pl.sites[i], data, idx, b - a)) die("subset");
    }
    fed_msg_train_config tc;
    memset(&tc, 0, sizeof tc);
    tc.epochs = (uint32_t)o.epochs;
    tc.batch = (uint32_t)o.batch;
    tc.optimizer = "sgd";
    tc.lr = 0.05f;
    tc.seed = seed;
    if (fed_train_spec_fit(&tc, 1, 0, 0, &pl.fit)) die("fit config");

    fed_sim_config sc = fed_sim_default_config();
    sc.train = data;
    sc.partition = part;
    sc.workers = workers;
    sc.tls = o.tls;
    sc.certs_script = FED_CERTS_SCRIPT;
    sc.seed = seed;
    sc.coord.model = m0;
    sc.coord.rounds = (uint64_t)o.rounds;
    sc.coord.fraction = o.fraction;
    sc.coord.train = tc;
    fed_log_set_level(FED_LOG_ERROR);

    printf("bench_sim: %s, %zu sites (%zu examples each on average), %zu per round, E=%g, "
           "B=%g, %zu workers, %g rounds x %g repeats, %s\n",
           o.arch, nsites, data->n / nsites, k, o.epochs, o.batch, workers, o.rounds, o.repeats,
           o.tls ? "TLS" : "plaintext inproc");
    double ts[MAX_REPEATS], tp[MAX_REPEATS], setup[MAX_REPEATS];
    size_t reps = (size_t)o.repeats;
    for (size_t r = 0; r < reps; r++) {
        tp[r] = run_plain(&pl, m0, (size_t)o.rounds, workers, seed);
        fed_sim_result res;
        if (fed_sim_run(&sc, NULL, &res)) die("sim");
        ts[r] = res.seconds / (double)res.rounds;
        setup[r] = res.setup_seconds;
        printf("  repeat %zu: plain %.3f s/round, sim %.3f s/round (set-up %.2f s)\n", r + 1, tp[r],
               ts[r], setup[r]);
        fflush(stdout);
    }
    double mp = bench_median(tp, reps), ms = bench_median(ts, reps);
    printf("\n| run   | s/round | ratio |\n|-------|--------:|------:|\n");
    printf("| plain | %7.3f |   ref |\n", mp);
    printf("| sim   | %7.3f | %5.2f |\n", ms, ms / mp);
    printf("\nsim / plain = %.2f (goal <= 1.15); sim set-up %.2f s (median)\n", ms / mp,
           bench_median(setup, reps));
    for (size_t i = 0; i < nsites; i++) fed_data_destroy(&pl.sites[i]);
    fed_free(pl.sites);
    fed_free(idx);
    fed_partition_destroy(&part);
    fed_model_destroy(&m0);
    fed_arch_destroy(&arch);
    fed_data_destroy(&data);
    return 0;
}
