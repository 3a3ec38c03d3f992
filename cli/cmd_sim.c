/* `fedtune sim`: a whole federation on one machine (sim/sim.h): the real coordinator and
 * N virtual sites over inproc:// (TLS with --tls), a partition of one labeled data set,
 * one line per round on stdout, JSON-lines and CSV metrics, a gnuplot plot, and a
 * summary with the final model's SHA-256 (same seed, same bytes). Launched by mpirun
 * (or --mpi), the same across the ranks (cli/sim_mpi.h): the outputs are rank 0's. */
#include "cli/commands.h"
#include "cli/prep.h"
#include "cli/mpi.h"
#include "cli/sim_mpi.h"
#include "cli/sim_sites.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "training/fit.h"
#include "core/log.h"
#include "core/rng.h"
#include "sim/attack.h"
#include "sim/sim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sim_cfg {
    const char *data, *test_data;    /* pooled training data, central test set */
    const char *test_labels;         /* IDX labels of test_data */
    data_cfg dc;                     /* how to read both */
    const char *sites;               /* TSV of sites, each with its own data */
    size_t site_split;               /* virtual sites per listed site */
    lora_cfg lora;                   /* LoRA adapters and their aggregation */
    const char *model, *arch;        /* initial model, or a fresh --arch */
    int allow_extra;                 /* ignore tensors the architecture lacks */
    size_t init_seed;                /* fresh model initialisation */
    const char *pretrain_data;       /* public data for central pre-training */
    size_t pretrain_epochs;          /* its epochs */
    double pretrain_lr;              /* its Adam learning rate */
    size_t new_head;                 /* replace the head (classes; 0: keep) */
    size_t clients;                  /* virtual sites */
    const char *partition;           /* iid | dirichlet | shards | labels */
    double alpha;                    /* dirichlet */
    size_t min_size, shards, labels; /* dirichlet minimum, K per client */
    double client_test_split;        /* federated evaluation share */
    coord_shared_cfg sh;             /* what `coordinator` maps the same way */
    size_t min_fit;        /* 0: 1, with --secagg 2, with a robust rule the least it defends with */
    size_t no_codec_sites; /* the first N sites lack "codec" */
    int keep_models;       /* sites keep the model between rounds ("delta-down") */
    size_t workers;        /* training threads (0: cores) */
    double dropout, stragglers, straggler_delay; /* failures */
    int tls;                                     /* full TLS in-process */
    int mpi;                                     /* across MPI ranks (also detected) */
    const char *mpi_host;                        /* what the site ranks connect to */
    double mpi_connect_timeout;                  /* seconds a site may take to connect */
    size_t seed;                                 /* everything random */
    const char *malicious;                       /* share of attacking sites (text: unset
                                                    is told from 0) */
    const char *attack;                          /* what they do */
    const char *csv, *plot;                      /* outputs besides sh's metrics and out */
    int verbose;                                 /* the coordinator's log lines too */
} sim_cfg;

#define F(field) offsetof(sim_cfg, field)
#define S(field) COORD_SHARED_AT(sim_cfg, sh, field)
static const opt_spec sim_opts[] = {
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data), "labeled data the sites share out"},
    {"test-data", OPT_STRING, NULL, 1, 0, NULL, F(test_data),
     "held-out labeled data: the coordinator's test set (accuracy per round)"},
    {"test-labels", OPT_STRING, NULL, 1, 0, NULL, F(test_labels),
     "IDX labels of --test-data (default: derived from its file name, as for --data)"},
    DATA_OPTS(F(dc)),
    TEXT_OPTS(F(dc)),
    {"sites", OPT_STRING, NULL, 1, 0, NULL, F(sites),
     "instead of --data: a TSV of sites, one a line: name<TAB>training data[<TAB>test data] "
     "(paths relative to the TSV's folder); each line is one site with exactly that data "
     "(the test file, when given, its federated evaluation); --clients is ignored"},
    {"site-split", OPT_SIZE, "1", 1, 100000, NULL, F(site_split),
     "--sites: deal each listed site's data to this many virtual sites (name-1 .. name-K) "
     "by --partition"},
    {"model", OPT_STRING, NULL, 1, 0, NULL, F(model), "pre-trained initial model (.safetensors)"},
    {"arch", OPT_STRING, NULL, 1, 0, NULL, F(arch),
     "architecture: a fresh model (without --model), or that of a weights-only --model"},
    {"allow-extra", OPT_BOOL, "false", 1, 0, NULL, F(allow_extra),
     "ignore tensors of --model that the architecture lacks"},
    {"init-seed", OPT_SIZE, "1", 0, 1e18, NULL, F(init_seed), "initialisation of a fresh model"},
    {"pretrain-data", OPT_STRING, NULL, 1, 0, NULL, F(pretrain_data),
     "public labeled data the initial model is first trained on centrally (before --new-head "
     "and the federation)"},
    {"pretrain-epochs", OPT_SIZE, "1", 1, 1e6, NULL, F(pretrain_epochs),
     "epochs of that pre-training (Adam, batch 64)"},
    {"pretrain-lr", OPT_FLOAT, "0.001", 1e-12, 10, NULL, F(pretrain_lr),
     "learning rate of that pre-training"},
    {"new-head", OPT_SIZE, "0", 0, 65536, NULL, F(new_head),
     "replace the model's head by a fresh one with this many classes (0: keep)"},
    {"freeze", OPT_LIST, NULL, 1, 0, NULL, S(freeze),
     "tensors kept frozen (globs such as 2.weight or *.bias, or a layer index: 0)"},
    LORA_OPTS(F(lora)),
    {"clients", OPT_SIZE, "100", 1, 1e6, NULL, F(clients), "virtual sites"},
    {"partition", OPT_CHOICE, "dirichlet", 1, 0, "iid|dirichlet|shards|labels", F(partition),
     "how the data are shared out"},
    {"alpha", OPT_FLOAT, "0.5", 1e-6, 1e6, NULL, F(alpha), "dirichlet: concentration"},
    {"min-size", OPT_SIZE, "10", 0, 1e9, NULL, F(min_size), "dirichlet: fewest examples a site"},
    {"shards-per-client", OPT_SIZE, "2", 1, 1e6, NULL, F(shards), "shards: K per site"},
    {"labels-per-client", OPT_SIZE, "2", 1, 65536, NULL, F(labels), "labels: K per site"},
    {"client-test-split", OPT_FLOAT, "0", 0, 0.9, NULL, F(client_test_split),
     "share of each site's data kept for federated evaluation"},
    {"rounds", OPT_SIZE, "200", 1, 1e9, NULL, S(rounds), "rounds"},
    {"fraction", OPT_FLOAT, "0.1", 1e-9, 1, NULL, S(fraction), "share of sites sampled per round"},
    {"min-fit", OPT_SIZE, "0", 0, 1e6, NULL, F(min_fit),
     "accepted updates a round needs (0: 1, with --secagg 2, with a robust --aggregation "
     "the least it needs for --byzantine)"},
    {"deadline-ms", OPT_SIZE, "600000", 1, 1e9, NULL, S(deadline_ms), "round deadline in ms"},
    TRAINING_OPTS(S, "1", "10", "sgd", "0.05"),
    {"max-steps", OPT_SIZE, "0", 0, 1e12, NULL, S(max_steps), "most local steps (0: no limit)"},
    STRATEGY_OPTS(S(sc)),
    DP_OPTS(S(dp)),
    SECAGG_OPTS(S(sa)),
    UPDATE_OPTS(S),
    RETRY_OPTS(S(rc), "0"),
    INPUT_STATS_OPT(S(input_stats), "off"),
    {"no-codec-sites", OPT_SIZE, "0", 0, 1e9, NULL, F(no_codec_sites),
     "the first N sites act as older sites without the capability \"codec\": they send plain "
     "f32 updates whatever --compress (a mixed federation)"},
    {"keep-models", OPT_BOOL, "false", 1, 0, NULL, F(keep_models),
     "sites keep the global model between rounds, as client daemons do (memory: a model a "
     "site), and so take --compress-down deltas"},
    {"workers", OPT_SIZE, "0", 0, 1024, NULL, F(workers), "training threads (0: the cores)"},
    {"dropout", OPT_FLOAT, "0", 0, 0.999, NULL, F(dropout),
     "probability a sampled site vanishes mid-round"},
    {"stragglers", OPT_FLOAT, "0", 0, 1, NULL, F(stragglers),
     "probability a sampled site starts late"},
    {"straggler-delay", OPT_FLOAT, "1", 0, 86400, NULL, F(straggler_delay),
     "how late a straggler starts, seconds"},
    {"tls", OPT_BOOL, "false", 1, 0, NULL, F(tls),
     "full TLS between the sites and the coordinator (certificates in a temp folder)"},
    {"mpi", OPT_BOOL, "false", 1, 0, NULL, F(mpi),
     "run across the ranks of mpirun -n N fedtune sim (detected from mpirun's environment "
     "without it): rank 0 the coordinator, ranks 1..N-1 the sites, over TCP with TLS; the "
     "same final model as one process (needs fedtune built with MPI: libopenmpi-dev)"},
    {"mpi-host", OPT_STRING, NULL, 1, 0, NULL, F(mpi_host),
     "MPI: the host name or address the site ranks reach rank 0 at (default: rank 0's host "
     "name, 127.0.0.1 when every rank runs on its host); rank 0 then listens on every "
     "interface"},
    {"mpi-connect-timeout", OPT_FLOAT, "120", 0.1, 86400, NULL, F(mpi_connect_timeout),
     "MPI: seconds a site rank waits for each of its sites to connect to rank 0 before the "
     "launch fails (a wrong --mpi-host, a firewall)"},
    {"seed", OPT_SIZE, "1", 0, 1e18, NULL, F(seed),
     "partition, sampling, failures and training seeds"},
    {"malicious", OPT_STRING, NULL, 1, 0, NULL, F(malicious),
     "share of the sites that attack, 0..0.5 (drawn from --seed; needs --attack)"},
    {"attack", OPT_STRING, NULL, 1, 0, NULL, F(attack),
     "the malicious sites' attack: sign-flip|scale[:K]|noise:S|label-flip|backdoor[:LABEL]|"
     "lie[:Z]"},
    {"target-accuracy", OPT_FLOAT, "0", 0, 1, NULL, S(target_accuracy),
     "stop at the first round whose test accuracy reaches this (0: off)"},
    {"metrics", OPT_STRING, NULL, 1, 0, NULL, S(metrics), "JSON-lines metrics per round"},
    {"csv", OPT_STRING, NULL, 1, 0, NULL, F(csv), "CSV metrics per round"},
    {"plot", OPT_STRING, NULL, 1, 0, NULL, F(plot),
     "PNG of accuracy and loss per round (gnuplot, Debian package gnuplot-nox)"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, S(out), "write the final model here"},
    {"verbose", OPT_BOOL, "false", 1, 0, NULL, F(verbose), "also log the coordinator's lines"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef S
#undef F

static const opt_table sim_table = {
    "sim",
    "Simulate a federation on this machine: the real coordinator and N virtual sites over "
    "inproc://, a partition of one data set, accuracy per round.",
    sim_opts, NULL};

/* What the round callback writes to. */
typedef struct sim_out {
    FILE *csv;
    char *csv_tmp;
    uint64_t rounds;
    double target;
    uint64_t first_target; /* first round reaching target (0: none) */
    uint64_t bytes;
    bool lm; /* a language model: perplexity beside the test loss */
} sim_out;

/* "%.4f" of v, or "-" when it is NaN (no test set). */
static const char *num(char buf[32], double v) {
    if (isnan(v)) return "-";
    snprintf(buf, 32, "%.4f", v);
    return buf;
}

static void on_round(void *user, const fed_coord_round_stats *s) {
    sim_out *o = user;
    char b1[32], b2[32], b3[32], ppl[32] = "";
    o->bytes += s->bytes_in + s->bytes_out;
    if (o->lm && !isnan(s->central_loss))
        snprintf(ppl, sizeof ppl, " ppl %.2f", exp(s->central_loss));
    printf("round %3" PRIu64 "/%" PRIu64 ": sampled %zu, returned %zu, train loss %s, test "
           "loss %s%s acc %s, %.1f MB, %.2f s",
           s->round, o->rounds, s->sampled, s->returned, num(b1, s->train_loss),
           num(b2, s->central_loss), ppl, num(b3, s->central_acc),
           (double)(s->bytes_in + s->bytes_out) / 1e6, s->seconds);
    printf(", up %" PRIu64 " B", s->update_bytes); /* update payloads accepted */
    if (s->updates_compressed) printf(" (%zu compressed)", s->updates_compressed);
    printf(", down %" PRIu64 " B", s->model_bytes); /* model payloads sent */
    if (s->models_trainable) /* a frozen base: who got it, who the trainable part only */
        printf(", models %zu full + %zu trainable-only", s->models_full, s->models_trainable);
    if (s->models_delta) /* --compress-down: the change from the version a site held */
        printf(", models %zu full + %zu deltas", s->models_full, s->models_delta);
    if (!isnan(s->epsilon)) printf(", epsilon %.4g", s->epsilon);
    if (!isnan(s->metric)) printf(", backdoor success %.3f", s->metric);
    printf("\n");
    fflush(stdout);
    if (o->target > 0 && !o->first_target && s->central_acc >= o->target)
        o->first_target = s->round;
    if (o->csv)
        fprintf(o->csv, "%" PRIu64 ",%zu,%zu,%.6g,%.6g,%.6g,%" PRIu64 ",%.4f\n", s->round,
                s->sampled, s->returned, s->train_loss, s->central_loss, s->central_acc,
                s->bytes_in + s->bytes_out, s->seconds);
}

static bool have_gnuplot(void) {
    return system("command -v gnuplot >/dev/null 2>&1") == 0;
}

/* Draws accuracy and loss per round from the CSV with gnuplot into png (atomically). */
static fed_err plot(const char *csv, const char *png) {
    if (!have_gnuplot())
        return fed_errorf(FED_EUNSUPPORTED,
                          "--plot: gnuplot is not installed (Debian package gnuplot-nox)");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.png", png);
    FILE *g = popen("gnuplot 2>&1", "w");
    if (!g) return fed_errorf(FED_EIO, "--plot: cannot run gnuplot");
    fprintf(g,
            "set terminal pngcairo size 900,500 noenhanced\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead\n"
            "set xlabel 'round'\n"
            "set ylabel 'test accuracy'\n"
            "set y2label 'loss'\n"
            "set ytics nomirror\n"
            "set y2tics\n"
            "set logscale y2\n"
            "set grid\n"
            "set key outside below horizontal\n"
            "set title 'fedtune sim: test accuracy and losses per round (round 0: the initial "
            "model)'\n"
            "plot '%s' using 1:6 with linespoints title 'test accuracy' axes x1y1, "
            "'' using 1:4 with lines title 'train loss' axes x1y2, "
            "'' using 1:5 with lines title 'test loss' axes x1y2\n",
            tmp, csv);
    int rc = pclose(g);
    if (rc != 0) {
        unlink(tmp);
        return fed_errorf(FED_EIO, "--plot: gnuplot failed (%d)", rc);
    }
    if (rename(tmp, png) != 0) return fed_errorf(FED_EIO, "--plot: cannot write %s", png);
    return FED_OK;
}

/* fedtune-certs for --tls: the one installed beside this executable (bin/fedtune-certs
 * of `cmake --install` or the Debian package), else the source tree's (a build tree's
 * bin/ has none). buf holds the path found beside the executable. */
static const char *certs_script(char *buf, size_t len) {
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n > 0) {
        buf[n] = '\0';
        char *slash = strrchr(buf, '/');
        static const char name[] = "fedtune-certs";
        if (slash && (size_t)(slash + 1 - buf) + sizeof name <= len) {
            memcpy(slash + 1, name, sizeof name);
            if (access(buf, X_OK) == 0) return buf;
        }
    }
    return FED_CERTS_SCRIPT;
}

/* The data folder of the default scenario: $FEDTUNE_DATA, ./data, or the source tree's. */
static const char *data_dir(void) {
    const char *env = getenv("FEDTUNE_DATA");
    if (env && env[0]) return env;
    if (access("data/fashion-mnist", F_OK) == 0) return "data";
    return FED_DATA_DIR;
}

/* Without --data, --model, --arch and --pretrain-data: the default scenario. A 2NN is
 * pre-trained on the public MNIST digits, gets a new head and is fine-tuned on
 * Fashion-MNIST by the sites (non-IID by the partition options: Dirichlet 0.5 over 100
 * sites by default); CSV and plot go to fedtune-sim.{csv,png}. Every other option
 * applies as given. */
static fed_err default_scenario(sim_cfg *o, char paths[3][4096]) {
    const char *d = data_dir();
    snprintf(paths[0], 4096, "%s/fashion-mnist/train-images-idx3-ubyte.gz", d);
    snprintf(paths[1], 4096, "%s/fashion-mnist/t10k-images-idx3-ubyte.gz", d);
    snprintf(paths[2], 4096, "%s/mnist/train-images-idx3-ubyte", d);
    for (int i = 0; i < 3; i++)
        if (access(paths[i], R_OK) != 0)
            return fed_errorf(FED_EIO,
                              "the default scenario needs %s: fetch MNIST and Fashion-MNIST with "
                              "scripts/fetch-data (or set FEDTUNE_DATA), or give --data",
                              paths[i]);
    o->data = paths[0];
    o->test_data = paths[1];
    o->pretrain_data = paths[2];
    o->arch = "fedavg-2nn";
    if (!o->new_head) o->new_head = 10;
    if (!o->csv) o->csv = "fedtune-sim.csv";
    if (!o->plot && have_gnuplot()) o->plot = "fedtune-sim.png";
    printf("default scenario: a 2NN pre-trained on the public MNIST digits (%s), new head, "
           "fine-tuned by %zu sites holding Fashion-MNIST (%s) as --partition %s",
           paths[2], o->clients, paths[0], o->partition);
    if (strcmp(o->partition, "dirichlet") == 0) printf(" --alpha %g", o->alpha);
    printf("; fedtune sim --help for the options\n");
    return FED_OK;
}

/* Central pre-training on public data: Adam, batch 64, constant rate. */
static fed_err pretrain(fed_model *m, const sim_cfg *o) {
    fed_dataset *pub = NULL;
    data_cfg pdc = o->dc;
    pdc.labels = NULL; /* derived from the file name */
    fed_err err = prep_load(&pub, o->pretrain_data, &pdc, NULL);
    if (err) return err;
    fed_fit_config f = fed_fit_defaults();
    f.epochs = o->pretrain_epochs;
    f.batch = 64;
    f.optim = fed_optim_defaults(FED_OPT_ADAM);
    f.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, (float)o->pretrain_lr);
    f.seed = o->seed;
    fed_fit_result r;
    if ((err = fed_fit(m, pub, NULL, &f, &r)) == FED_OK)
        printf("pretrain: %zu examples of %s, %zu epochs, train loss %.4f, %.1f s\n", pub->n,
               o->pretrain_data, r.epochs_run, r.final_train_loss, r.seconds);
    fed_data_destroy(&pub);
    return err;
}

/* The model the federation starts from: loaded (--model) or made (--arch), pre-trained
 * (--pretrain-data) and given a new head (--new-head) as asked. */
static fed_err start_model(const sim_cfg *o, fed_model **m, fed_meta **meta, fed_arch **arch) {
    fed_err err;
    if (o->model) {
        if ((err = prep_load_model(m, meta, o->model, o->arch, o->allow_extra != 0))) return err;
    } else {
        if ((err = cli_read_arch(arch, o->arch))) return err;
        if ((err = fed_model_new(m, *arch))) return err;
        fed_model_init(*m, o->init_seed);
    }
    if (o->pretrain_data) {
        fed_blas_set_threads((int)sysconf(_SC_NPROCESSORS_ONLN));
        if ((err = pretrain(*m, o))) return err;
    }
    if (o->new_head) {
        fed_model *h = NULL;
        if ((err = fed_model_new_head(&h, *m, o->new_head, o->init_seed))) return err;
        fed_model_destroy(m);
        *m = h;
    }
    return FED_OK;
}

/* The partition's settings as the options ask (pc: kept in the simulator's
 * configuration; --sites deals each listed site's data with them too). */
static void set_part_config(const sim_cfg *o, fed_part_config *pc) {
    pc->clients = o->clients;
    pc->kind = strcmp(o->partition, "dirichlet") == 0 ? FED_PART_DIRICHLET
               : strcmp(o->partition, "shards") == 0  ? FED_PART_SHARDS
               : strcmp(o->partition, "labels") == 0  ? FED_PART_LABELS
                                                      : FED_PART_IID;
    pc->alpha = o->alpha;
    pc->min_size = o->min_size;
    pc->shards_per_client = o->shards;
    pc->labels_per_client = o->labels;
    pc->seed = o->seed;
}

/* A one-line description of how skewed the partition is. */
static fed_err describe(const fed_partition *part, const fed_dataset *train, char *desc,
                        size_t desc_len) {
    fed_part_stats ps;
    fed_err err = fed_partition_stats(part, train->y, train->num_classes, &ps);
    if (err) return err;
    fed_partition_describe(&ps, part->clients, desc, desc_len);
    return FED_OK;
}

/* How the simulated sites behave: failures, the channel, capabilities, memory. */
static void set_sites(const sim_cfg *o, fed_sim_config *sc) {
    sc->dropout = o->dropout;
    sc->stragglers = o->stragglers;
    sc->straggler_delay_s = o->straggler_delay;
    sc->tls = o->tls != 0;
    sc->no_codec_sites = o->no_codec_sites;
    sc->keep_models = o->keep_models != 0;
}

/* --min-fit, or by default 1, 2 with --secagg, and the least a robust rule defends with. */
static void set_min_fit(const sim_cfg *o, fed_coord_config *cc) {
    cc->min_fit = o->min_fit ? o->min_fit : o->sh.sa.on ? 2 : 1;
    if (!o->min_fit && fed_robust_min_fit(&cc->robust) > cc->min_fit)
        cc->min_fit = fed_robust_min_fit(&cc->robust);
}

/* --malicious and --attack into sc (sc->seed set): the share and the attack. */
static fed_err parse_attack(const sim_cfg *o, fed_sim_config *sc) {
    if (!o->attack && !o->malicious) return FED_OK;
    if (!o->attack) return fed_errorf(FED_EINVAL, "--malicious needs --attack (what they do)");
    if (!o->malicious) return fed_errorf(FED_EINVAL, "--attack needs --malicious (how many)");
    char *end = NULL;
    double f = strtod(o->malicious, &end);
    if (end == o->malicious || *end || !(f >= 0.0 && f <= 0.5))
        return fed_errorf(FED_EINVAL, "--malicious %s: must be a share in [0, 0.5]", o->malicious);
    sc->malicious = f;
    const char *a = o->attack, *colon = strchr(a, ':');
    size_t klen = colon ? (size_t)(colon - a) : strlen(a);
    fed_site_attack *at = &sc->attack;
    if (klen == 9 && strncmp(a, "sign-flip", 9) == 0 && !colon)
        at->kind = FED_ATTACK_SIGN_FLIP;
    else if (klen == 10 && strncmp(a, "label-flip", 10) == 0 && !colon)
        at->kind = FED_ATTACK_LABEL_FLIP;
    else if (klen == 5 && strncmp(a, "scale", 5) == 0)
        at->kind = FED_ATTACK_SCALE;
    else if (klen == 5 && strncmp(a, "noise", 5) == 0)
        at->kind = FED_ATTACK_NOISE;
    else if (klen == 8 && strncmp(a, "backdoor", 8) == 0)
        at->kind = FED_ATTACK_BACKDOOR; /* label 0 unless given */
    else if (klen == 3 && strncmp(a, "lie", 3) == 0)
        at->kind = FED_ATTACK_LIE, at->param = (double)NAN; /* NaN: the paper's Z (sim.h) */
    else
        return fed_errorf(FED_EINVAL,
                          "--attack %s: unknown (sign-flip, scale[:K], noise:S, label-flip, "
                          "backdoor[:LABEL], lie[:Z])",
                          a);
    if (at->kind == FED_ATTACK_NOISE && !colon)
        return fed_errorf(FED_EINVAL, "--attack %s: noise needs its std, noise:S", a);
    if (colon) {
        double v = strtod(colon + 1, &end);
        if (end == colon + 1 || *end || !isfinite(v))
            return fed_errorf(FED_EINVAL, "--attack %s: %s is not a number", a, colon + 1);
        if (at->kind == FED_ATTACK_SCALE && v == 0.0)
            return fed_errorf(FED_EINVAL, "--attack %s: K must not be 0", a);
        if (at->kind == FED_ATTACK_NOISE && !(v > 0.0))
            return fed_errorf(FED_EINVAL, "--attack %s: S must be > 0", a);
        if (at->kind == FED_ATTACK_LIE && !(v >= 0.0))
            return fed_errorf(FED_EINVAL, "--attack %s: Z must be >= 0", a);
        if (at->kind == FED_ATTACK_BACKDOOR &&
            !(v >= 0 && v == floor(v) && v < (double)sc->train->num_classes))
            return fed_errorf(FED_EINVAL, "--attack %s: LABEL must be a class id, 0..%zu", a,
                              sc->train->num_classes - 1);
        at->param = v;
    }
    return FED_OK;
}

/* The backdoor's line: its label, share and trigger. */
static fed_err print_trigger(const fed_sim_config *sc) {
    fed_sim_trigger t;
    fed_err err = fed_sim_trigger_make(&t, sc->train);
    if (err) return err;
    printf("backdoor: label %g; triggered copies of %g%% of each malicious site's examples; "
           "trigger (feature=value):",
           sc->attack.param, 100 * FED_SIM_BACKDOOR_SHARE);
    for (size_t k = 0; k < t.n; k++) printf(" %zu=%g", t.at[k], (double)t.value[k]);
    printf("\n");
    return FED_OK;
}

/* The line naming the malicious sites, and with label flipping the label counts each of
 * them trains on (after the flip). */
static fed_err print_malicious(const sim_cfg *o, const fed_sim_config *sc) {
    if (!o->attack) return FED_OK;
    const fed_partition *p = sc->partition;
    const size_t n = p->clients, C = sc->train->num_classes;
    bool *bad = fed_calloc(n, sizeof *bad);
    size_t *cnt = fed_calloc(C, sizeof *cnt);
    if (!bad || !cnt) {
        fed_free(bad);
        fed_free(cnt);
        return FED_ENOMEM;
    }
    size_t m = fed_sim_malicious(sc, n, bad);
    printf("malicious: %zu of %zu sites (%s)%s", m, n, o->attack, m ? ":" : "");
    char name[64];
    for (size_t i = 0; i < n; i++)
        if (bad[i]) {
            fed_sim_site_name(name, sc, n, i);
            printf(" %s", name);
        }
    printf("\n");
    fed_err err = sc->attack.kind == FED_ATTACK_BACKDOOR ? print_trigger(sc) : FED_OK;
    if (m && sc->attack.kind == FED_ATTACK_LIE) {
        size_t k, f;
        double z = fed_sim_lie_z(sc, n, m, &k, &f);
        printf("lie: Z %.6g (%s, %zu sites a round, %zu of them malicious); mu and sigma from "
               "%d trainings on resamples of each malicious site's own data\n",
               z, isnan(sc->attack.param) ? "the paper's" : "given", k, f, FED_SITE_LIE_K);
    }
    for (size_t i = 0; i < n && sc->attack.kind == FED_ATTACK_LABEL_FLIP; i++) {
        if (!bad[i]) continue;
        memset(cnt, 0, C * sizeof *cnt);
        for (size_t j = p->offsets[i]; j < p->offsets[i + 1]; j++)
            cnt[C - 1 - (size_t)sc->train->y[p->index[j]]]++;
        fed_sim_site_name(name, sc, n, i);
        printf("label-flip: %s trains on labels", name);
        for (size_t c = 0; c < C; c++) printf(" %zu:%zu", c, cnt[c]);
        printf("\n");
    }
    fed_free(bad);
    fed_free(cnt);
    return err;
}

/* The sites' shares of train as the options ask, and a one-line description of them. */
static fed_err make_partition(const sim_cfg *o, const fed_dataset *train, fed_part_config *pc,
                              fed_partition **part, char *desc, size_t desc_len) {
    set_part_config(o, pc);
    fed_err err;
    if ((err = fed_partition_make(part, train->y, train->n, train->num_classes, pc))) return err;
    return describe(*part, train, desc, desc_len);
}

/* The per-round CSV, written to path.tmp (renamed at the end), with its header and the
 * initial model's row. */
static fed_err open_csv(sim_out *so, const char *path, double loss0, double acc0) {
    size_t len = strlen(path) + 8;
    if (!(so->csv_tmp = malloc(len))) return FED_ENOMEM;
    snprintf(so->csv_tmp, len, "%s.tmp", path);
    if (!(so->csv = fopen(so->csv_tmp, "w")))
        return fed_errorf(FED_EIO, "%s: cannot write", so->csv_tmp);
    fprintf(so->csv,
            "round,sampled,returned,train_loss,test_loss,test_accuracy,bytes,seconds\n"
            "0,0,0,nan,%.6g,%.6g,0,0\n",
            loss0, acc0); /* the initial model */
    return FED_OK;
}

/* The closing lines: the summary, the target accuracy (when one was set), the hash. */
static void print_summary(const sim_cfg *o, const sim_out *so, const fed_sim_result *res,
                          double acc0) {
    char b1[32], b2[32], hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", res->sha256[i]);
    printf("summary: %" PRIu64 " rounds in %.1f s (+%.1f s set-up), start accuracy %s, final "
           "accuracy %s, %.1f MB moved, %" PRIu64 " dropouts, %" PRIu64 " stragglers\n",
           res->rounds, res->seconds, res->setup_seconds, num(b1, acc0),
           num(b2, res->last.central_acc), (double)so->bytes / 1e6, res->dropped, res->straggled);
    if (o->sh.target_accuracy > 0) {
        if (so->first_target)
            printf("target accuracy %.4f first reached in round %" PRIu64 "\n",
                   o->sh.target_accuracy, so->first_target);
        else
            printf("target accuracy %.4f not reached in %" PRIu64 " rounds\n",
                   o->sh.target_accuracy, res->rounds);
    }
    if (!isnan(res->last.metric))
        printf("backdoor success %.3f: the final model's share of triggered test examples "
               "classified as the target label\n",
               res->last.metric);
    printf("final model sha256 %s\n", hex);
}

/* What the sites and the coordinator's test get: the pooled data (--data, or every
 * listed site's with --sites) and the test set, read the way the model expects them. */
typedef struct sim_data {
    fed_dataset *train, *test; /* --data (NULL with --sites) and --test-data */
    sim_sites ss;              /* --sites */
    prep_text pt;              /* tokenizer and length of text data */
    bool text;                 /* the data are token ids */
} sim_data;

static void sim_data_free(sim_data *d) {
    fed_data_destroy(&d->train);
    fed_data_destroy(&d->test);
    sim_sites_free(&d->ss);
    prep_text_close(&d->pt);
}

/* Text data: token ids reach the model unchanged, and a --tokenizer goes into the final
 * model's metadata (*meta made if the model had none). */
static fed_err text_checks(const sim_cfg *o, fed_meta **meta, sim_data *d) {
    if (*meta && fed_meta_get(*meta, META_STANDARDIZE))
        return fed_errorf(FED_EINVAL,
                          "the data are text, but the model standardises its inputs (%s): token "
                          "ids must reach it unchanged",
                          META_STANDARDIZE);
    printf("sim: text, %zu token ids per example (%s)\n", d->pt.len,
           o->dc.tokenizer ? o->dc.tokenizer : "the model's tokenizer");
    if (!d->pt.from_option) return FED_OK;
    fed_err err = *meta ? FED_OK : fed_meta_new(meta);
    char *js = NULL;
    if (!err) err = fed_tokenizer_to_json(d->pt.tok, &js);
    if (!err) err = fed_meta_set(*meta, META_TOKENIZER, js);
    fed_free(js);
    return err;
}

/* One file as the model expects it: text tokenized, numbers standardised by its
 * transform. */
static fed_err load_file(fed_dataset **out, const char *path, const data_cfg *dc,
                         const char *classes, const fed_meta *meta, sim_data *d) {
    fed_err err = prep_load_data(out, path, dc, classes, &d->pt);
    if (err) return err;
    if (d->pt.loaded) d->text = true;
    return d->pt.loaded ? FED_OK : prep_apply_meta_std(meta, *out);
}

static fed_err load_sim_data(const sim_cfg *o, const fed_model *m, fed_meta **meta, sim_data *d,
                             const fed_part_config *pc) {
    memset(d, 0, sizeof *d);
    const char *classes = *meta ? fed_meta_get(*meta, META_CLASSES) : NULL;
    fed_err err = prep_text_open(&d->pt, &o->dc, *meta, m);
    if (err) return err;
    if (o->sites) {
        sim_sites_read rd = {&o->dc, classes, *meta, &d->pt};
        if ((err = sim_sites_load(&d->ss, o->sites, o->site_split, pc, &rd))) return err;
        d->text = d->pt.loaded;
        if (d->ss.classes) classes = d->ss.classes;
    } else {
        data_cfg bdc = o->dc;
        bdc.keep_bytes = true; /* IDX images stay bytes, converted per batch */
        if ((err = load_file(&d->train, o->data, &bdc, classes, *meta, d))) return err;
    }
    if (o->test_data) {
        data_cfg tdc = o->dc;
        tdc.keep_bytes = true;
        tdc.labels = o->test_labels; /* --labels names the training images' labels */
        if ((err = load_file(&d->test, o->test_data, &tdc, classes, *meta, d))) return err;
    }
    return d->text ? text_checks(o, meta, d) : FED_OK;
}

/* One run; mpi NULL: in this process. */
static fed_err run_sim1(const sim_cfg *cfgp, const sim_mpi *mpi) {
    sim_cfg oc = *cfgp;
    sim_cfg *o = &oc;
    bool lead = !mpi || mpi->rank == 0; /* writes the outputs */
    static char paths[3][4096];
    fed_err err = FED_OK;
    if (!o->data && !o->model && !o->arch && !o->pretrain_data &&
        (err = default_scenario(o, paths)))
        return err;
    if (!o->data && !o->sites) return fed_errorf(FED_EINVAL, "--data or --sites is required");
    if (o->data && o->sites)
        return fed_errorf(FED_EINVAL, "--sites lists the sites' data: give it or --data, not both");
    if (o->site_split > 1 && !o->sites) return fed_errorf(FED_EINVAL, "--site-split needs --sites");
    if (!o->model && !o->arch) return fed_errorf(FED_EINVAL, "--model or --arch is required");
    if (o->plot && !o->csv) return fed_errorf(FED_EINVAL, "--plot needs --csv (the data it draws)");
    if (o->plot && !have_gnuplot())
        return fed_errorf(FED_EUNSUPPORTED,
                          "--plot: gnuplot is not installed (Debian package gnuplot-nox)");
    fed_model *m = NULL, *fin = NULL;
    fed_meta *meta = NULL;
    sim_data d;
    memset(&d, 0, sizeof d);
    fed_arch *arch = NULL;
    fed_partition *part = NULL;
    sim_out so;
    memset(&so, 0, sizeof so);

    if ((err = start_model(o, &m, &meta, &arch))) goto done;
    bool keep_frozen = false;
    if ((err = prep_lora(&m, &o->lora, o->new_head != 0, o->init_seed, &keep_frozen))) goto done;
    fed_sim_config sc = fed_sim_default_config();
    set_part_config(o, &sc.part);
    if ((err = load_sim_data(o, m, &meta, &d, &sc.part))) goto done;
    fed_dataset *train = d.train ? d.train : d.ss.train, *test = d.test;
    sc.train = train;
    char pdesc[512], certs[4096];
    if (o->sites) {
        o->clients = d.ss.n;
        sc.site_names = (const char *const *)d.ss.names;
        sc.site_tests = (const fed_dataset *const *)d.ss.tests;
        sc.partition = d.ss.part;
        if ((err = describe(d.ss.part, train, pdesc, sizeof pdesc))) goto done;
    } else {
        if ((err = make_partition(o, train, &sc.part, &part, pdesc, sizeof pdesc))) goto done;
        sc.partition = part;
    }
    sc.client_test_split = o->client_test_split;
    sc.workers = o->workers ? o->workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (sc.workers < 1) sc.workers = 1;
    set_sites(o, &sc);
    sc.certs_script = certs_script(certs, sizeof certs);
    sc.seed = o->seed;
    if ((err = parse_attack(o, &sc))) goto done;
    fed_coord_config *cc = &sc.coord;
    cc->model = m;
    cc->model_meta = meta;
    cc->keep_frozen = keep_frozen;
    cc->eval_data = test;
    if ((err = prep_coord_shared(&o->sh, cc))) goto done;
    set_min_fit(o, cc);
    cc->train.seed = o->seed;
    cc->dp.noise_seed = fed_mix64((uint64_t)o->seed ^ 0x6470u); /* reproducible noise */
    cc->on_round = on_round;
    cc->on_round_user = &so;
    so.rounds = o->sh.rounds;
    so.target = o->sh.target_accuracy;
    so.lm = fed_loss_for_model(m) == FED_LOSS_NEXT_TOKEN;

    /* Every worker trains with one BLAS thread: the workers are the parallelism. */
    fed_blas_set_threads(1);
    double acc0 = (double)NAN, loss0 = (double)NAN;
    if (test) {
        if ((err = fed_evaluate_ce(m, test, 0, &loss0, &acc0))) goto done;
    }
    if (o->csv && lead && (err = open_csv(&so, o->csv, loss0, acc0))) goto done;
    if (!o->verbose) fed_log_set_level(FED_LOG_ERROR); /* dropouts are expected: no warn lines */
    char b1[32];
    printf("sim: %zu examples (%zu classes) shared out to %zu sites (%s), %zu workers, %s; test "
           "set %zu examples, start accuracy %s\n",
           train->n, train->num_classes, o->clients, o->sites ? "--sites" : o->partition,
           sc.workers, sc.tls ? "TLS" : "plaintext inproc", test ? test->n : (size_t)0,
           num(b1, acc0));
    printf("partition: %s\n", pdesc);
    if ((err = print_malicious(o, &sc))) goto done;
    if (cc->robust.rule != FED_ROBUST_MEAN)
        printf("aggregation: %s, byzantine %zu, at least %zu updates a round\n",
               fed_robust_name(cc->robust.rule), cc->robust.byzantine, cc->min_fit);
    fflush(stdout);
    fed_sim_result res;
    err = mpi ? sim_mpi_run(mpi, &sc, &fin, &res) : fed_sim_run(&sc, &fin, &res);
    fed_log_set_level(FED_LOG_INFO);
    if (err) goto done;
    if (so.csv) {
        int bad = fclose(so.csv) != 0;
        so.csv = NULL;
        if (bad || rename(so.csv_tmp, o->csv) != 0) {
            err = fed_errorf(FED_EIO, "%s: cannot write", o->csv);
            goto done;
        }
    }
    print_summary(o, &so, &res, acc0);
    if (o->plot && lead && (err = plot(o->csv, o->plot))) goto done;
    if (o->plot) printf("plot written to %s\n", o->plot);
done:
    if (so.csv) {
        fclose(so.csv);
        unlink(so.csv_tmp);
    }
    free(so.csv_tmp);
    fed_model_destroy(&fin);
    fed_model_destroy(&m);
    fed_meta_destroy(&meta);
    fed_arch_destroy(&arch);
    sim_data_free(&d);
    fed_partition_destroy(&part);
    return err;
}

/* In this process, or (--mpi, or launched by mpirun) across the ranks. */
static fed_err run_sim(const void *cfgp) {
    sim_cfg o = *(const sim_cfg *)cfgp;
    if (!o.mpi && !cli_mpi_launched())
        return o.mpi_host ? fed_errorf(FED_EINVAL, "--mpi-host needs an MPI launch "
                                                   "(mpirun -n N fedtune sim ...)")
                          : run_sim1(&o, NULL);
    if (!cli_mpi_built())
        return fed_errorf(FED_EUNSUPPORTED,
                          "%s: this fedtune was built without MPI: install "
                          "libopenmpi-dev and rebuild (scripts/setup)",
                          o.mpi ? "--mpi" : "launched by mpirun");
    sim_mpi m;
    o.tls = 1; /* plaintext is for inproc:// only */
    fed_err err = sim_mpi_start(&m);
    m.host = o.mpi_host;
    m.connect_timeout_s = o.mpi_connect_timeout;
    if (!err) err = run_sim1(&o, &m);
    return sim_mpi_finish(&m, err);
}

int cmd_sim(int argc, char **argv) {
    sim_cfg c;
    return cli_run(&sim_table, &c, sizeof c, argc, argv, run_sim);
}
