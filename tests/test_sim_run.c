/* The simulator (sim/sim.h) end to end on a synthetic task (four Gaussian classes in
 * eight dimensions, so nothing needs fetching): the same seed gives the same final
 * bytes twice and another seed other bytes; the reported SHA-256 is that of the final
 * model and the model learns; with dropouts every round still completes and the new
 * global model is FedAvg over exactly the sites that returned; stragglers later than the
 * deadline are left out while the rounds go on; the full TLS channel gives the same
 * bytes as plaintext inproc://, and its temporary certificate folder is gone after the
 * run, a good one or one whose certificate script failed; split across "processes"
 * (threads here: the coordinator alone on TCP, two shares of the sites) the final model
 * is the one-process run's; bad configurations are refused naming the field. */
#include "sim/sim.h"
#include "sim/certs.h"
#include "core/alloc.h"
#include "training/fit.h"
#include "core/rng.h"
#include "net/channel.h"
#include "privacy/secagg.h"
#include "tests/test.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIM     8
#define CLASSES 4
#define MLP                                                                                        \
    "{\"input\":[8],\"layers\":[{\"type\":\"linear\",\"out\":16},{\"type\":\"relu\"},{\"type\":"   \
    "\"linear\",\"out\":4}]}"

/* n examples of four Gaussian classes (unit noise around fixed centres); seed picks the
 * examples, the centres are the same for every set. */
static fed_dataset *blobs(size_t n, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, DIM, CLASSES) != FED_OK) return NULL;
    fed_rng centres, r;
    fed_rng_seed(&centres, 7);
    float mu[CLASSES][DIM];
    for (int c = 0; c < CLASSES; c++)
        for (int j = 0; j < DIM; j++) mu[c][j] = 1.5f * fed_rng_normal(&centres);
    fed_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        int c = (int)fed_rng_below(&r, CLASSES);
        d->y[i] = c;
        for (int j = 0; j < DIM; j++) d->x[i * DIM + j] = mu[c][j] + fed_rng_normal(&r);
    }
    return d;
}

static fed_model *make_model(void) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, MLP) != FED_OK || fed_model_new(&m, a) != FED_OK) {
        fed_arch_destroy(&a);
        return NULL;
    }
    fed_arch_destroy(&a);
    fed_model_init(m, 3);
    return m;
}

static double accuracy(fed_model *m, const fed_dataset *d) {
    fed_loss_config loss = {FED_LOSS_SOFTMAX_CE, 0.0f};
    fed_eval_result r;
    memset(&r, 0, sizeof r);
    if (fed_evaluate(m, d, 0, &loss, &r) != FED_OK) return -1.0;
    double a = r.accuracy;
    fed_eval_result_free(&r);
    return a;
}

static fed_dataset *train_set, *test_set;
static fed_model *m0;

static fed_sim_config base_config(void) {
    fed_sim_config c = fed_sim_default_config();
    c.train = train_set;
    c.part.clients = 12;
    c.part.kind = FED_PART_DIRICHLET;
    c.part.alpha = 0.5;
    c.part.min_size = 10;
    c.workers = 2;
    c.seed = 5;
    c.coord.model = m0;
    c.coord.eval_data = test_set;
    c.coord.rounds = 3;
    c.coord.fraction = 0.5;
    c.coord.train.epochs = 2;
    c.coord.train.batch = 10;
    c.coord.train.optimizer = "sgd";
    c.coord.train.lr = 0.05f;
    c.coord.train.seed = 5;
    c.certs_script = FED_CERTS_SCRIPT;
    return c;
}

/* Runs cfg; *hash its SHA-256, *final (if non-NULL) the model. */
static fed_err run(const fed_sim_config *cfg, fed_sim_result *res, fed_model **final) {
    fed_err err = fed_sim_run(cfg, final, res);
    if (err) fprintf(stderr, "sim: %s\n", fed_errmsg());
    return err;
}

TEST(same_seed_same_bytes) {
    fed_sim_config cfg = base_config();
    fed_sim_result a, b, c;
    fed_model *fa = NULL;
    CHECK_OK(run(&cfg, &a, &fa));
    CHECK_OK(run(&cfg, &b, NULL));
    CHECK_MEM(a.sha256, b.sha256, 32);
    CHECK(a.rounds == 3);
    CHECK_SIZE(a.last.sampled, 6);
    CHECK_SIZE(a.last.returned, 6);
    CHECK(a.bytes > 0);
    CHECK(isnan(a.last.fed_acc)); /* no site holds a test split: no federated evaluation */
    if (fa) {
        /* The reported hash is that of the final model's parameter bytes. */
        uint8_t h[32];
        fed_sha256(fed_model_params_const(fa), fed_model_num_params(fa) * sizeof(float), h);
        CHECK_MEM(h, a.sha256, 32);
        double acc0 = accuracy(m0, test_set), acc = accuracy(fa, test_set);
        CHECK_NEAR(acc, a.last.central_acc, 1e-9);
        CHECK(acc > acc0 + 0.3);
        CHECK(acc > 0.8);
    }
    fed_model_destroy(&fa);
    cfg.seed = 6;
    CHECK_OK(run(&cfg, &c, NULL));
    CHECK(memcmp(a.sha256, c.sha256, 32) != 0);
    /* With a test split at every site the federated evaluation is there. */
    cfg.client_test_split = 0.2;
    CHECK_OK(run(&cfg, &c, NULL));
    CHECK(c.last.fed_acc > 0.3 && c.last.fed_acc <= 1.0);
}

/* What on_update saw in round 1. */
typedef struct seen {
    size_t n;         /* floats per delta */
    float *delta[12]; /* by site */
    uint64_t ex[12];  /* weights */
    bool dropped[12]; /* vanished */
    bool sent[12];    /* computed at all */
} seen;

static void record(void *user, size_t site, uint64_t round, const float *delta, size_t n,
                   uint64_t examples, bool dropped) {
    seen *s = user;
    if (round != 1 || site >= 12) return;
    s->n = n;
    s->delta[site] = fed_mallocarray(n, sizeof(float));
    if (s->delta[site]) memcpy(s->delta[site], delta, n * sizeof(float));
    s->ex[site] = examples;
    s->dropped[site] = dropped;
    s->sent[site] = true;
}

/* prev + the example-weighted mean of the recorded deltas (dropped ones too if all). */
static double max_gap(const seen *s, const float *prev, const float *got, bool all) {
    double w = 0;
    for (int i = 0; i < 12; i++)
        if (s->sent[i] && (all || !s->dropped[i])) w += (double)s->ex[i];
    double worst = 0;
    for (size_t j = 0; j < s->n; j++) {
        double sum = 0;
        for (int i = 0; i < 12; i++)
            if (s->sent[i] && (all || !s->dropped[i]))
                sum += (double)s->ex[i] * (double)s->delta[i][j];
        double want = (double)prev[j] + sum / w;
        double gap = fabs(want - (double)got[j]);
        if (gap > worst) worst = gap;
    }
    return worst;
}

TEST(dropout_is_fedavg_of_returners) {
    /* Round 1 with every site sampled and 40% vanishing after training. */
    fed_sim_config cfg = base_config();
    cfg.coord.rounds = 1;
    cfg.coord.fraction = 1.0;
    cfg.dropout = 0.4;
    seen s;
    memset(&s, 0, sizeof s);
    cfg.on_update = record;
    cfg.on_update_user = &s;
    fed_sim_result res;
    fed_model *fin = NULL;
    CHECK_OK(run(&cfg, &res, &fin));
    CHECK(res.rounds == 1);
    CHECK(res.dropped >= 1 && res.dropped <= 10);
    size_t sent = 0, dropped = 0;
    for (int i = 0; i < 12; i++) {
        sent += s.sent[i];
        dropped += s.sent[i] && s.dropped[i];
    }
    CHECK_SIZE(sent, 12);
    CHECK_SIZE(dropped, (size_t)res.dropped);
    CHECK_SIZE(res.last.sampled, 12);
    CHECK_SIZE(res.last.returned, 12 - dropped);
    /* The model has no frozen tensor: the deltas cover every parameter. */
    CHECK_SIZE(s.n, fed_model_num_params(m0));
    if (fin && s.n == fed_model_num_params(m0)) {
        const float *prev = fed_model_params_const(m0), *got = fed_model_params_const(fin);
        CHECK(max_gap(&s, prev, got, false) < 1e-6);
        CHECK(max_gap(&s, prev, got, true) > 1e-4); /* the check can tell the two apart */
    }
    fed_model_destroy(&fin);
    for (int i = 0; i < 12; i++) fed_free(s.delta[i]);

    /* Several rounds with dropouts: every round completes, and the run repeats. */
    cfg.on_update = NULL;
    cfg.coord.rounds = 4;
    cfg.coord.fraction = 0.5;
    fed_sim_result a, b;
    CHECK_OK(run(&cfg, &a, NULL));
    CHECK_OK(run(&cfg, &b, NULL));
    CHECK(a.rounds == 4);
    CHECK(a.dropped >= 1);
    CHECK(a.dropped == b.dropped);
    CHECK_MEM(a.sha256, b.sha256, 32);
}

TEST(stragglers_miss_the_deadline) {
    /* Half the sample starts 1.5 s late, the deadline is 300 ms: rounds close with the
     * punctual sites (min_fit 1) and go on. */
    fed_sim_config cfg = base_config();
    cfg.coord.rounds = 2;
    cfg.coord.deadline_ms = 300;
    cfg.stragglers = 0.5;
    cfg.straggler_delay_s = 1.5;
    fed_sim_result res;
    CHECK_OK(run(&cfg, &res, NULL));
    CHECK(res.rounds == 2);
    CHECK(res.straggled >= 1);
    CHECK(res.last.returned >= 1);
    CHECK(res.last.returned <= res.last.sampled);

    /* Stragglers well inside the deadline change nothing: the same bytes as none. */
    fed_sim_config c2 = base_config();
    fed_sim_result ref, late;
    CHECK_OK(run(&c2, &ref, NULL));
    c2.stragglers = 1.0;
    c2.straggler_delay_s = 0.05;
    CHECK_OK(run(&c2, &late, NULL));
    CHECK(late.straggled == 3 * 6);
    CHECK_MEM(ref.sha256, late.sha256, 32);
}

TEST(tls_same_bytes_as_inproc) {
    fed_sim_config cfg = base_config();
    cfg.part.clients = 6;
    cfg.coord.rounds = 2;
    cfg.dropout = 0.3;
    fed_sim_result plain, tls;
    CHECK_OK(run(&cfg, &plain, NULL));
    cfg.tls = true;
    CHECK_OK(run(&cfg, &tls, NULL));
    CHECK_MEM(plain.sha256, tls.sha256, 32);
    CHECK(tls.rounds == 2);
    CHECK(tls.dropped == plain.dropped);
    /* TLS records and handshakes cost bytes: more moved than in plaintext. */
    CHECK(tls.bytes > plain.bytes);
}

/* A certificate script in dir that logs the folder fed_sim_run gives it (the init-ca
 * argument, "<folder>/ca") to dir/log and then runs the real one; fail_site makes its
 * "site" step exit 3 instead. Its path goes to script. */
static bool wrap_certs(const char *dir, bool fail_site, char script[512]) {
    snprintf(script, 512, "%s/certs", dir);
    FILE *f = fopen(script, "w");
    if (!f) return false;
    fprintf(f,
            "#!/bin/sh\n"
            "[ \"$1\" = init-ca ] && printf '%%s\\n' \"$2\" >>'%s/log'\n"
            "%s"
            "exec '%s' \"$@\"\n",
            dir, fail_site ? "[ \"$1\" = site ] && exit 3\n" : "", FED_CERTS_SCRIPT);
    return fclose(f) == 0 && chmod(script, 0755) == 0;
}

/* The certificate folder the wrapper in dir logged, without its "/ca" ("" if none). */
static void logged_certdir(const char *dir, char out[512]) {
    char path[512];
    snprintf(path, sizeof path, "%s/log", dir);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(out, 512, f)) out[0] = '\0';
    fclose(f);
    size_t len = strlen(out);
    if (len >= 4 && strcmp(out + len - 4, "/ca\n") == 0) out[len - 4] = '\0';
}

/* --tls makes its certificates in a temporary folder and removes all of it at the end,
 * after a completed run and after a failed certificate step alike. */
TEST(tls_cert_folder_removed) {
    char dir[] = "/tmp/fedsim-test-XXXXXX", script[512], certs[512], log[600];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(log, sizeof log, "%s/log", dir);
    fed_sim_config cfg = base_config();
    cfg.part.clients = 3;
    cfg.coord.rounds = 1;
    cfg.tls = true;
    cfg.certs_script = script;
    fed_sim_result res;
    for (int fail = 0; fail < 2; fail++) {
        CHECK(wrap_certs(dir, fail == 1, script));
        if (fail) {
            CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EIO);
            CHECK_CONTAINS(fed_errmsg(), "certificates: ");
            CHECK_CONTAINS(fed_errmsg(), "' 'site' '");
            CHECK_CONTAINS(fed_errmsg(), "' 'site-000'\" failed (768)"); /* exit 3 */
        } else {
            CHECK_OK(run(&cfg, &res, NULL));
            CHECK(res.rounds == 1);
        }
        logged_certdir(dir, certs);
        CHECK_INT(strncmp(certs, "/tmp/fedsim-certs-", 18), 0);
        errno = 0;
        CHECK_INT(access(certs, F_OK), -1);
        CHECK_INT(errno, ENOENT);
        CHECK_INT(remove(log), 0);
    }
    CHECK_INT(remove(script), 0);
    CHECK_INT(rmdir(dir), 0);
}

/* Secure aggregation: the model moves by the unweighted mean of exactly the survivors'
 * deltas, up to one rounding step of the fixed point (2 x clip / quant), though 40% of
 * the sites vanish after sharing their keys (their masks are removed from the sum). */
TEST(secagg_is_the_mean_of_survivors) {
    fed_sim_config cfg = base_config();
    cfg.coord.rounds = 1;
    cfg.coord.fraction = 1.0;
    cfg.coord.min_fit = 2;
    cfg.coord.secagg.on = true;
    cfg.dropout = 0.4;
    /* Training starts 0.3 s late, when the keys and shares have long been exchanged: the
     * sites that vanish after training do so after sharing. */
    cfg.stragglers = 1.0;
    cfg.straggler_delay_s = 0.3;
    seen s;
    memset(&s, 0, sizeof s);
    cfg.on_update = record;
    cfg.on_update_user = &s;
    fed_sim_result res;
    fed_model *fin = NULL;
    CHECK_OK(run(&cfg, &res, &fin));
    CHECK(res.rounds == 1);
    CHECK_SIZE(res.last.attempts, 1);
    size_t dropped = 0;
    for (int i = 0; i < 12; i++) {
        dropped += s.sent[i] && s.dropped[i];
        s.ex[i] = 1; /* secagg sums unweighted */
    }
    CHECK(dropped >= 1 && dropped <= 5); /* within the threshold: 7 of 12 must survive */
    CHECK_SIZE(res.last.sampled, 12);
    CHECK_SIZE(res.last.returned, 12 - dropped);
    CHECK_SIZE(res.last.secagg_dropped, dropped);
    if (fin && s.n == fed_model_num_params(m0)) {
        const float *prev = fed_model_params_const(m0), *got = fed_model_params_const(fin);
        double step = 2.0 * FED_SA_DEFAULT_CLIP / (double)FED_SA_DEFAULT_QUANT;
        double gap = max_gap(&s, prev, got, false);
        CHECK(gap <= step + 1e-6);
        CHECK(gap > 0);                             /* the stochastic rounding did happen */
        CHECK(max_gap(&s, prev, got, true) > 1e-4); /* the check can tell the two apart */
    }
    fed_model_destroy(&fin);
    for (int i = 0; i < 12; i++) fed_free(s.delta[i]);

    /* 60% dropout: most attempts keep fewer than the 7 survivors the threshold needs; the
     * round aborts cleanly and is retried until one has enough. */
    cfg.on_update = NULL;
    cfg.stragglers = 0;
    cfg.dropout = 0.6;
    CHECK_OK(run(&cfg, &res, NULL));
    CHECK(res.rounds == 1);
    CHECK(res.last.attempts > 1);
    CHECK(res.last.returned >= 7);

    /* Over TLS the key blocks are signed with the sites' certificates and checked by
     * the coordinator and every neighbour; with DP the sites clip and add the noise. */
    cfg = base_config();
    cfg.part.clients = 6;
    cfg.coord.rounds = 2;
    cfg.coord.min_fit = 2;
    cfg.coord.secagg.on = true;
    cfg.coord.dp.clip = 1.0;
    cfg.coord.dp.noise = 0.3;
    cfg.tls = true;
    CHECK_OK(run(&cfg, &res, NULL));
    CHECK(res.rounds == 2);
    CHECK_SIZE(res.last.returned, 3);
    CHECK(isfinite(res.last.epsilon) && res.last.epsilon > 0);
    /* The same with central DP spends the same epsilon: the sum carries the same noise. */
    fed_sim_result central;
    cfg.coord.secagg.on = false;
    CHECK_OK(run(&cfg, &central, NULL));
    CHECK_NEAR(res.last.epsilon, central.last.epsilon, 1e-9);

    /* An impossible threshold is a clear error at the first round. */
    cfg = base_config();
    cfg.coord.min_fit = 2;
    cfg.coord.secagg.on = true;
    cfg.coord.secagg.threshold = 9; /* of 6 sampled */
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "threshold");
    cfg.coord.secagg.threshold = 0;
    cfg.coord.min_fit = 1;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "secagg needs min-fit >= 2");
}

/* ---- across processes, played by threads (what cli/sim_mpi.c does with MPI) ---- */

/* One "process": its configuration, result, error and thread. */
typedef struct role_run {
    fed_sim_config cfg;
    fed_sim_result res;
    fed_err err;
    atomic_bool over;
    pthread_t th;
} role_run;

static pthread_mutex_t role_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t role_cv = PTHREAD_COND_INITIALIZER;
static char role_endpoint[128]; /* what the coordinator bound ("" before) */
static atomic_bool role_ended;  /* the coordinator's run returned */

static fed_err role_listen(void *user, const char *endpoint) {
    (void)user;
    pthread_mutex_lock(&role_mu);
    snprintf(role_endpoint, sizeof role_endpoint, "%s", endpoint);
    pthread_cond_broadcast(&role_cv);
    pthread_mutex_unlock(&role_mu);
    return FED_OK;
}

static bool role_coord_ended(void *user) {
    (void)user;
    return atomic_load(&role_ended);
}

static void *role_main(void *p) {
    role_run *rr = p;
    rr->err = fed_sim_run(&rr->cfg, NULL, &rr->res);
    if (rr->err) fprintf(stderr, "role %d: %s\n", (int)rr->cfg.role, fed_errmsg());
    pthread_mutex_lock(&role_mu);
    atomic_store(&rr->over, true);
    pthread_cond_broadcast(&role_cv);
    pthread_mutex_unlock(&role_mu);
    return NULL;
}

/* The coordinator alone (certificates made beforehand, a free TCP port) and two shares
 * of the 12 sites (even and odd), with dropouts: the one-process run's final bytes and
 * dropouts, every site hosted once. */
TEST(roles_same_bytes_as_one_process) {
    fed_sim_config cfg = base_config();
    cfg.dropout = 0.2;
    fed_sim_result one;
    CHECK_OK(run(&cfg, &one, NULL));
    char dir[] = "/tmp/fedsim-roles-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_OK(fed_sim_make_certs(&cfg, 12, dir));
    static role_run coord, sites[2];
    coord.cfg = cfg;
    coord.cfg.tls = true;
    coord.cfg.cert_dir = dir;
    coord.cfg.role = FED_SIM_COORDINATOR;
    coord.cfg.endpoint = "tcp://127.0.0.1:*";
    coord.cfg.on_listen = role_listen;
    CHECK(pthread_create(&coord.th, NULL, role_main, &coord) == 0);
    pthread_mutex_lock(&role_mu);
    while (!role_endpoint[0] && !atomic_load(&coord.over)) pthread_cond_wait(&role_cv, &role_mu);
    pthread_mutex_unlock(&role_mu);
    CHECK(strncmp(role_endpoint, "tcp://127.0.0.1:", 16) == 0);
    for (size_t k = 0; k < 2 && role_endpoint[0]; k++) {
        sites[k].cfg = coord.cfg;
        sites[k].cfg.role = FED_SIM_SITES;
        sites[k].cfg.endpoint = role_endpoint;
        sites[k].cfg.on_listen = NULL;
        sites[k].cfg.host_stride = 2;
        sites[k].cfg.host_index = k;
        sites[k].cfg.coord_ended = role_coord_ended;
        sites[k].cfg.connect_timeout_s = 300;
        CHECK(pthread_create(&sites[k].th, NULL, role_main, &sites[k]) == 0);
    }
    pthread_join(coord.th, NULL);
    atomic_store(&role_ended, true);
    for (size_t k = 0; k < 2 && role_endpoint[0]; k++) pthread_join(sites[k].th, NULL);
    CHECK_OK(coord.err);
    CHECK_OK(sites[0].err);
    CHECK_OK(sites[1].err);
    CHECK_MEM(coord.res.sha256, one.sha256, 32);
    CHECK(coord.res.rounds == 3);
    CHECK_SIZE(coord.res.hosted, 0);
    CHECK_SIZE(sites[0].res.hosted, 6);
    CHECK_SIZE(sites[1].res.hosted, 6);
    CHECK(one.dropped > 0);
    CHECK(sites[0].res.dropped + sites[1].res.dropped == one.dropped);
    CHECK(sites[0].res.site_bytes > 0 && sites[1].res.site_bytes > 0);
    CHECK(fed_sim_remove_tree(dir) == 0);
    CHECK(access(dir, F_OK) != 0);
}

TEST(bad_configs) {
    fed_sim_config cfg = base_config();
    fed_sim_result res;
    cfg.workers = 0;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "workers 0");
    cfg = base_config();
    cfg.dropout = 1.0;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "dropout 1");
    cfg = base_config();
    cfg.train = NULL;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "no training data");
    cfg = base_config();
    cfg.coord.model = NULL;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "no initial model");
    cfg = base_config();
    cfg.part.clients = 1000; /* 800 examples cannot give 1000 sites 10 each */
    CHECK(fed_sim_run(&cfg, NULL, &res) != FED_OK);
    cfg = base_config();
    cfg.tls = true;
    cfg.certs_script = "/nonexistent/fedtune-certs";
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/fedtune-certs");
    cfg = base_config();
    cfg.role = FED_SIM_SITES;
    cfg.host_stride = 2;
    cfg.tls = true;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL); /* no endpoint */
    CHECK_CONTAINS(fed_errmsg(), "across processes the sites connect over tcp:// with TLS");
    cfg.endpoint = "inproc://x";
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "across processes");
    cfg.endpoint = "tcp://127.0.0.1:1";
    cfg.tls = false;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "across processes");
    cfg.tls = true;
    cfg.host_index = 2;
    CHECK_ERR(fed_sim_run(&cfg, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "host_index 2 is not below host_stride 2");
}

int main(void) {
    train_set = blobs(800, 1);
    test_set = blobs(400, 2);
    m0 = make_model();
    if (!train_set || !test_set || !m0) return 1;
    RUN(same_seed_same_bytes);
    RUN(dropout_is_fedavg_of_returners);
    RUN(stragglers_miss_the_deadline);
    RUN(tls_same_bytes_as_inproc);
    RUN(tls_cert_folder_removed);
    RUN(secagg_is_the_mean_of_survivors);
    RUN(roles_same_bytes_as_one_process);
    RUN(bad_configs);
    fed_model_destroy(&m0);
    fed_data_destroy(&train_set);
    fed_data_destroy(&test_set);
    return test_report();
}
