/* Tests of the site client (client/client.h) against a coordinator scripted here with
 * fed_server: real sockets on 127.0.0.1, real TLS with certificates from
 * certs/fedtune-certs in a temporary folder, data copied from tests/data/blobs.csv. The
 * site runs fed_site_run in its own thread; the test plays the coordinator and checks
 * Hello, Updates (the delta bit for bit against fed_fit re-run here), Errors for a model
 * the site does not hold, a wrong manifest and data that do not fit, reconnection after
 * a drop, a late coordinator, Bye, and a clean stop. */
#include "tests/test_net_common.h"

#include "client/client.h"
#include "core/alloc.h"
#include "training/fit.h"
#include "core/model.h"
#include "dataset/moments.h"
#include "core/train_spec.h"
#include "privacy/identity.h"
#include "privacy/secagg.h"

#include <inttypes.h>
#include <signal.h>

static char csv_path[320];

/* A CA, the coordinator "localhost" (127.0.0.1), site-1, and the site's data. */
static int setup(void) {
    snprintf(certdir, sizeof certdir, "/tmp/fedclient-test-XXXXXX");
    if (!mkdtemp(certdir)) return -1;
    const char *s = FED_CERTS_SCRIPT, *q = ">/dev/null 2>&1";
    int rc = sh("%s init-ca %s/ca %s", s, certdir, q);
    rc |= sh("%s coordinator %s/ca localhost --ip 127.0.0.1 %s", s, certdir, q);
    rc |= sh("%s site %s/ca site-1 %s", s, certdir, q);
    rc |= sh("%s site %s/ca site-2 %s", s, certdir, q);
    /* FED_CERTS_SCRIPT is <source>/certs/fedtune-certs. */
    char src[512];
    snprintf(src, sizeof src, "%s", FED_CERTS_SCRIPT);
    char *cut = strstr(src, "certs/fedtune-certs");
    if (!cut) return -1;
    snprintf(cut, sizeof src - (size_t)(cut - src), "tests/data/blobs.csv");
    snprintf(csv_path, sizeof csv_path, "%s/site.csv", certdir);
    rc |= sh("cp '%s' '%s'", src, csv_path);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Log lines of the site, info and above                                                */

#define CAP_MAX 512
static char cap_lines[CAP_MAX][512];
static int cap_n;
static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;

static void cap_handler(void *user, fed_log_level level, const char *line) {
    (void)user;
    if (getenv("FED_TEST_VERBOSE")) fprintf(stderr, "[%s] %s\n", fed_log_level_name(level), line);
    if (level > FED_LOG_INFO) return;
    pthread_mutex_lock(&cap_mu);
    if (cap_n < CAP_MAX) snprintf(cap_lines[cap_n++], sizeof cap_lines[0], "%s", line);
    pthread_mutex_unlock(&cap_mu);
}

/* Lines containing a (and b, if not NULL). */
static int cap_count(const char *a, const char *b) {
    int n = 0;
    pthread_mutex_lock(&cap_mu);
    for (int i = 0; i < cap_n; i++)
        if (strstr(cap_lines[i], a) && (!b || strstr(cap_lines[i], b))) n++;
    pthread_mutex_unlock(&cap_mu);
    return n;
}

/* ------------------------------------------------------------------------------------ */
/* The scripted coordinator                                                             */

typedef struct coord {
    fed_server *srv;
    uint32_t peer;
    int joined, left, updates, errors, byes, done, sent, failed;
    /* the last Hello */
    char software[64];
    bool cap_delta, cap_eval, cap_secagg, cap_codec;
    uint64_t hello_train, hello_eval;
    /* the last Update, and its delta as received */
    fed_msg_update up;
    char metric_names[8][32];
    double metric_values[8];
    size_t nmetrics;
    float *delta;
    size_t delta_cap;
    /* the last SecAgg message */
    uint8_t *sa;
    size_t sa_len;
    uint64_t sa_round;
    int secaggs;
    /* the last Error */
    uint32_t err_code;
    char err_text[256];
    uint64_t err_round, err_attempt;
} coord;

static double metric(const coord *c, const char *name) {
    for (size_t i = 0; i < c->nmetrics; i++)
        if (strcmp(c->metric_names[i], name) == 0) return c->metric_values[i];
    return (double)NAN;
}

static void coord_event(coord *c, const fed_net_event *ev) {
    switch (ev->type) {
    case FED_NET_JOINED: {
        const fed_msg_hello *h = &ev->msg->u.hello;
        c->joined++;
        c->peer = ev->peer;
        snprintf(c->software, sizeof c->software, "%s", h->software);
        c->cap_delta = c->cap_eval = false;
        for (size_t i = 0; i < h->num_capabilities; i++) {
            if (strcmp(h->capabilities[i], "delta-f32") == 0) c->cap_delta = true;
            if (strcmp(h->capabilities[i], "eval") == 0) c->cap_eval = true;
            if (strcmp(h->capabilities[i], "secagg") == 0) c->cap_secagg = true;
            if (strcmp(h->capabilities[i], "codec") == 0) c->cap_codec = true;
        }
        c->hello_train = h->train_examples;
        c->hello_eval = h->eval_examples;
        break;
    }
    case FED_NET_LEFT:
        c->left++;
        break;
    case FED_NET_MESSAGE: {
        const fed_msg *m = ev->msg;
        if (m->type == FED_MSG_UPDATE) {
            c->up = m->u.update;
            c->nmetrics = 0;
            for (size_t i = 0; i < m->u.update.num_metrics && i < 8; i++, c->nmetrics++) {
                snprintf(c->metric_names[i], sizeof c->metric_names[i], "%s",
                         m->u.update.metrics[i].name);
                c->metric_values[i] = m->u.update.metrics[i].value;
            }
            c->up.metrics = NULL;
            c->up.num_metrics = 0;
            size_t n = (size_t)(c->up.total_bytes / 4);
            if (n > c->delta_cap) {
                fed_free(c->delta);
                c->delta = fed_calloc(n, sizeof(float));
                c->delta_cap = n;
            }
            CHECK_OK(fed_server_recv_transfer(c->srv, ev->peer, c->up.transfer_id, c->delta,
                                              c->up.total_bytes, c->up.sha256));
            c->updates++;
        } else if (m->type == FED_MSG_ERROR) {
            c->err_code = m->u.error.code;
            c->err_round = m->u.error.round;
            c->err_attempt = m->u.error.attempt;
            snprintf(c->err_text, sizeof c->err_text, "%s", m->u.error.text);
            c->errors++;
        } else if (m->type == FED_MSG_BYE) {
            c->byes++;
        } else if (m->type == FED_MSG_SECAGG) {
            fed_free(c->sa);
            c->sa = fed_malloc(m->u.secagg.len);
            if (c->sa) memcpy(c->sa, m->u.secagg.msg, m->u.secagg.len);
            c->sa_len = c->sa ? m->u.secagg.len : 0;
            c->sa_round = m->u.secagg.round;
            c->secaggs++;
        }
        break;
    }
    case FED_NET_TRANSFER_DONE:
        c->done++;
        break;
    case FED_NET_TRANSFER_SENT:
        c->sent++;
        break;
    case FED_NET_TRANSFER_FAILED:
        c->failed++;
        break;
    case FED_NET_NONE:
        break;
    }
}

static void coord_poll(coord *c, int ms) {
    fed_net_event ev;
    for (int k = 0; k < 64; k++) {
        if (fed_server_poll(c->srv, k == 0 ? ms : 0, &ev) != FED_OK) {
            fprintf(stderr, "server poll: %s\n", fed_server_errmsg(c->srv));
            return;
        }
        if (ev.type == FED_NET_NONE) return;
        coord_event(c, &ev);
    }
}

/* Polls until *counter reaches target (false after timeout_ms). */
static bool coord_wait(coord *c, const int *counter, int target, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (*counter < target) {
        if (now_ms() > end) return false;
        coord_poll(c, 5);
    }
    return true;
}

/* Polls until the site logged a line containing a and b. */
static bool coord_wait_log(coord *c, const char *a, const char *b, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (cap_count(a, b) == 0) {
        if (now_ms() > end) return false;
        coord_poll(c, 5);
    }
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* Models, manifests, what the site must compute                                        */

#define MLP4                                                                                       \
    "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":8},{\"type\":\"relu\"},{\"type\":"    \
    "\"linear\",\"out\":3}]}"
#define MLP5                                                                                       \
    "{\"input\":[5],\"layers\":[{\"type\":\"linear\",\"out\":8},{\"type\":\"relu\"},{\"type\":"    \
    "\"linear\",\"out\":3}]}"

/* A global model: the weights, its canonical architecture and its manifest. */
typedef struct gmodel {
    fed_model *m;
    char *arch;
    fed_msg_tensor tensors[8];
    char names[8][FED_TENSOR_NAME_MAX];
    fed_msg_manifest mf;
} gmodel;

static void gmodel_manifest(gmodel *g) {
    size_t nt = fed_model_num_tensors(g->m);
    for (size_t i = 0; i < nt && i < 8; i++) {
        const fed_tensor *t = fed_model_tensor(g->m, i);
        fed_msg_tensor *mt = &g->tensors[i];
        memset(mt, 0, sizeof *mt);
        snprintf(g->names[i], sizeof g->names[i], "%s", t->name);
        mt->name = g->names[i];
        mt->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) mt->shape[d] = t->shape[d];
        mt->dtype = FED_DTYPE_F32;
        mt->trainable = t->trainable;
    }
    g->mf.tensors = g->tensors;
    g->mf.num_tensors = nt;
    g->mf.total_bytes = 4u * fed_model_num_params(g->m);
    fed_sha256(fed_model_params_const(g->m), (size_t)g->mf.total_bytes, g->mf.sha256);
    g->mf.arch = g->arch;
}

/* Built from spec, initialised from seed, "0.bias" frozen. */
static bool gmodel_make(gmodel *g, const char *spec, uint64_t seed) {
    memset(g, 0, sizeof *g);
    fed_arch *a = NULL;
    if (fed_arch_parse(&a, spec) != FED_OK) return false;
    fed_err e = fed_model_new(&g->m, a);
    if (!e) e = fed_arch_to_json(a, &g->arch);
    fed_arch_destroy(&a);
    if (e) return false;
    fed_model_init(g->m, seed);
    if (fed_model_set_trainable_glob(g->m, "0.bias", false) != 1) return false;
    gmodel_manifest(g);
    return true;
}

static void gmodel_free(gmodel *g) {
    fed_model_destroy(&g->m);
    fed_free(g->arch);
}

/* The training configuration the coordinator sends. */
static fed_msg_train_config train_config(void) {
    fed_msg_train_config tc;
    memset(&tc, 0, sizeof tc);
    tc.epochs = 5; /* the site caps it at 2 */
    tc.batch = 32; /* the site caps it at 16 */
    tc.optimizer = "sgd";
    tc.lr = 0.05f;
    tc.momentum = 0.9f;
    tc.weight_decay = 1e-4f;
    tc.clip_norm = 5.0f;
    tc.seed = 42;
    return tc;
}

/* RoundStart.deadline_ms of the rounds the scripted coordinator sends. */
static uint64_t round_deadline_ms = 60000;

static fed_err send_round_epochs(coord *c, uint64_t round, uint64_t version, uint64_t xfer,
                                 const fed_msg_manifest *mf, uint32_t epochs) {
    fed_msg m = {.type = FED_MSG_ROUND_START};
    fed_msg_round_start *rs = &m.u.round_start;
    rs->round = round;
    rs->model_version = version;
    rs->config = train_config();
    if (epochs) rs->config.epochs = epochs;
    rs->manifest = *mf;
    rs->transfer_id = xfer;
    rs->deadline_ms = round_deadline_ms;
    rs->attempt = round + 2; /* any attempt: the site echoes it */
    return fed_server_send(c->srv, c->peer, &m);
}

static fed_err send_round(coord *c, uint64_t round, uint64_t version, uint64_t xfer,
                          const fed_msg_manifest *mf) {
    return send_round_epochs(c, round, version, xfer, mf, 0);
}

/* The site's data as the site prepares it (split seed 5, 20% test, standardised). */
typedef struct data {
    fed_dataset *train, *test;
} data;

static bool data_load(data *d) {
    memset(d, 0, sizeof *d);
    fed_dataset *all = NULL;
    fed_standardizer *st = NULL;
    bool ok = fed_data_load(&all, csv_path, NULL) == FED_OK &&
              fed_data_split(all, 0.0, 0.2, 5, &d->train, NULL, &d->test) == FED_OK &&
              fed_std_fit(&st, d->train) == FED_OK && fed_std_apply(st, d->train) == FED_OK &&
              fed_std_apply(st, d->test) == FED_OK;
    fed_std_destroy(&st);
    fed_data_destroy(&all);
    return ok;
}

static void data_free(data *d) {
    fed_data_destroy(&d->train);
    fed_data_destroy(&d->test);
}

/* local - global over the trainable tensors after fed_fit as the site must run it:
 * sgd lr 0.05 momentum 0.9 wd 1e-4 clip 5, epochs 2 and batch 16 (the site's caps),
 * seed 42 + round. Returns the number of floats. */
static size_t expected_delta(const fed_model *global, const fed_dataset *train, uint64_t round,
                             float *out) {
    fed_model *loc = NULL;
    if (fed_model_clone(&loc, global) != FED_OK) return 0;
    fed_fit_config fc = fed_fit_defaults();
    fc.optim = fed_optim_defaults(FED_OPT_SGD);
    fc.optim.momentum = 0.9f;
    fc.optim.weight_decay = 1e-4f;
    fc.optim.clip_norm = 5.0f;
    fc.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 0.05f);
    fc.epochs = 2;
    fc.batch = 16;
    fc.restore_best = false;
    fc.seed = 42 + round;
    fed_fit_result r;
    size_t k = 0;
    if (fed_fit(loc, train, NULL, &fc, &r) == FED_OK) {
        (void)fed_model_delta(global, fed_model_params_const(loc), fed_model_params_const(global),
                              out);
        k = fed_model_num_trainable(global);
    }
    fed_model_destroy(&loc);
    return k;
}

/* Checks the last Update against round/version and the expected delta of global. */
static void check_update(const coord *c, uint64_t round, uint64_t version, const fed_model *global,
                         const data *d) {
    CHECK_SIZE(c->up.round, round);
    CHECK_SIZE(c->up.model_version, version);
    CHECK_SIZE(c->up.examples, d->train->n);
    CHECK_INT(c->up.encoding, FED_ENCODING_DELTA_F32);
    /* One upload id per attempt (round << 16 | attempt): ids are never reused. */
    CHECK_SIZE(c->up.attempt, round + 2);
    CHECK_SIZE(c->up.transfer_id, round << 16 | (round + 2));
    size_t nt = fed_model_num_trainable(global);
    CHECK_SIZE(c->up.total_bytes, 4 * nt);
    CHECK_SIZE(c->nmetrics, 7);
    CHECK_NEAR(metric(c, "steps"), 2.0 * (double)((d->train->n + 15) / 16), 0.0);
    CHECK_NEAR(metric(c, "out_of_time"), 0.0, 0.0);
    CHECK(isfinite(metric(c, "train_loss")) && metric(c, "train_loss") > 0.0);
    CHECK(metric(c, "train_accuracy") >= 0.0 && metric(c, "train_accuracy") <= 1.0);
    CHECK(isfinite(metric(c, "global_loss")) && metric(c, "global_loss") > 0.0);
    CHECK(metric(c, "global_accuracy") >= 0.0 && metric(c, "global_accuracy") <= 1.0);
    CHECK_NEAR(metric(c, "eval_examples"), (double)d->test->n, 0.0);
    /* The channel checked the digest; check it again on what arrived. */
    uint8_t sha[32];
    fed_sha256(c->delta, (size_t)c->up.total_bytes, sha);
    CHECK_MEM(sha, c->up.sha256, 32);
    float *want = fed_calloc(nt ? nt : 1, sizeof(float));
    if (!want) return;
    CHECK_SIZE(expected_delta(global, d->train, round, want), nt);
    CHECK_MEM(c->delta, want, nt * sizeof(float));
    fed_free(want);
}

/* ------------------------------------------------------------------------------------ */
/* The site in a thread                                                                 */

typedef struct site_thread {
    fed_site *site;
    volatile sig_atomic_t stop;
    fed_err result;
    pthread_t th;
} site_thread;

static void *site_main(void *p) {
    site_thread *t = p;
    t->result = fed_site_run(t->site, &t->stop);
    return NULL;
}

static fed_site_config site_config(const char *endpoint) {
    static char cert[320], key[320], ca[320], crl[320];
    snprintf(ca, sizeof ca, "%s/ca/ca.crt", certdir);
    snprintf(crl, sizeof crl, "%s/ca/crl.pem", certdir);
    snprintf(cert, sizeof cert, "%s/ca/sites/site-1/site-1.crt", certdir);
    snprintf(key, sizeof key, "%s/ca/sites/site-1/site-1.key", certdir);
    fed_site_config c = fed_site_default_config();
    c.coordinator = endpoint;
    c.server_name = "localhost";
    c.net.tls.ca_file = ca;
    c.net.tls.cert_file = cert;
    c.net.tls.key_file = key;
    c.net.tls.crl_file = crl;
    c.net.handshake_timeout_ms = 1000;
    c.data = csv_path;
    c.test_split = 0.2;
    c.seed = 5;
    c.threads = 1;
    c.max_epochs = 2;
    c.max_batch = 16;
    c.backoff_initial_ms = 50;
    c.backoff_max_ms = 400;
    c.backoff_jitter = 0.5;
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* Tests                                                                                */

/* One site's life against a scripted coordinator, as named cases run in this order over
 * one fixture (L): the Hello, three rounds, two bad models, two lost connections, the
 * two kinds of Bye; the counters at the end add up the whole life. */
static struct {
    coord c;
    data d;
    gmodel g, g5;
    void *zctx;
    fed_site *site;
    site_thread st;
    bool running; /* the site's thread runs: every case after the first needs it */
} L;

TEST(site_life_hello) {
    CHECK(data_load(&L.d));
    CHECK(gmodel_make(&L.g, MLP4, 7));
    L.zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&L.c.srv, L.zctx, &sc));
    fed_site_config cfg = site_config(L.c.srv ? fed_server_endpoint(L.c.srv) : "");
    CHECK_OK(fed_site_new(&L.site, &cfg));
    if (!L.c.srv || !L.site || !L.d.train || !L.g.m) return;
    L.st.site = L.site;
    CHECK_INT(pthread_create(&L.st.th, NULL, site_main, &L.st), 0);
    L.running = true;

    /* Hello: software, capabilities, the split's counts. */
    CHECK(coord_wait(&L.c, &L.c.joined, 1, 5000));
    CHECK(strncmp(L.c.software, "fedtune ", 8) == 0);
    CHECK(L.c.cap_delta && L.c.cap_eval && L.c.cap_codec);
    CHECK_SIZE(L.c.hello_train, L.d.train->n);
    CHECK_SIZE(L.c.hello_eval, L.d.test->n);
    CHECK_SIZE(L.d.train->n + L.d.test->n, 150);
}

TEST(site_life_three_rounds) {
    if (!L.running) return;
    /* Round 1: the model follows as transfer 1. */
    CHECK_OK(send_round(&L.c, 1, 1, 1, &L.g.mf));
    CHECK_OK(fed_server_send_transfer(L.c.srv, L.c.peer, 1, fed_model_params_const(L.g.m),
                                      L.g.mf.total_bytes));
    CHECK(coord_wait(&L.c, &L.c.done, 1, 10000));
    CHECK_INT(L.c.updates, 1);
    CHECK_INT(L.c.sent, 1);
    check_update(&L.c, 1, 1, L.g.m, &L.d);
    CHECK(coord_wait_log(&L.c, "round 1:", "train loss", 5000));
    CHECK_INT(cap_count("round 1:", "local caps: epochs 5 -> 2, batch 32 -> 16"), 1);

    /* Round 2: transfer 0, the site holds version 1. */
    CHECK_OK(send_round(&L.c, 2, 1, 0, &L.g.mf));
    CHECK(coord_wait(&L.c, &L.c.done, 2, 10000));
    CHECK_INT(L.c.updates, 2);
    check_update(&L.c, 2, 1, L.g.m, &L.d);
    CHECK(coord_wait_log(&L.c, "round 2:", "train loss", 5000));

    /* Round 3: transfer 0 for a model it does not hold. */
    fed_msg_manifest other = L.g.mf;
    other.sha256[0] ^= 1;
    CHECK_OK(send_round(&L.c, 3, 9, 0, &other));
    CHECK(coord_wait(&L.c, &L.c.errors, 1, 5000));
    CHECK_INT(L.c.err_code, FED_WIRE_NO_MODEL);
    CHECK_STR(L.c.err_text, "no model version 9");
}

TEST(site_life_bad_models) {
    if (!L.running) return;
    /* Round 4: the manifest's shapes do not match its architecture. */
    fed_msg_manifest bad = L.g.mf;
    CHECK(gmodel_make(&L.g5, MLP5, 8));
    if (!L.g5.m) return;
    bad.arch = L.g5.arch;
    CHECK_OK(send_round(&L.c, 4, 4, 4, &bad));
    CHECK_OK(fed_server_send_transfer(L.c.srv, L.c.peer, 4, fed_model_params_const(L.g.m),
                                      L.g.mf.total_bytes));
    CHECK(coord_wait(&L.c, &L.c.errors, 2, 5000));
    CHECK_INT(L.c.err_code, 7);
    CHECK_CONTAINS(L.c.err_text, "0.weight");
    CHECK_CONTAINS(L.c.err_text, "(8, 4)");
    CHECK_OK(fed_server_cancel_transfer(L.c.srv, L.c.peer, 4));

    /* Round 5: a valid model whose input the local data do not fit. */
    CHECK_OK(send_round(&L.c, 5, 5, 5, &L.g5.mf));
    CHECK_OK(fed_server_send_transfer(L.c.srv, L.c.peer, 5, fed_model_params_const(L.g5.m),
                                      L.g5.mf.total_bytes));
    CHECK(coord_wait(&L.c, &L.c.errors, 3, 5000));
    CHECK_INT(L.c.err_code, 7);
    CHECK_CONTAINS(L.c.err_text, "4 features");
    CHECK_CONTAINS(L.c.err_text, "5 inputs");
    CHECK_INT(L.c.updates, 2);
}

TEST(site_life_lost_connections) {
    if (!L.running) return;
    /* The coordinator drops the site: it reconnects, the next round works. */
    CHECK_OK(fed_server_drop(L.c.srv, L.c.peer, "test drop"));
    CHECK(coord_wait(&L.c, &L.c.left, 1, 5000));
    CHECK(coord_wait(&L.c, &L.c.joined, 2, 10000));
    float *p = fed_model_params(L.g.m);
    for (size_t i = 0; i < fed_model_num_params(L.g.m); i++) p[i] *= 0.9f;
    gmodel_manifest(&L.g);
    CHECK_OK(send_round(&L.c, 6, 6, 6, &L.g.mf));
    CHECK_OK(fed_server_send_transfer(L.c.srv, L.c.peer, 6, fed_model_params_const(L.g.m),
                                      L.g.mf.total_bytes));
    CHECK(coord_wait(&L.c, &L.c.done, 3, 10000));
    CHECK_INT(L.c.updates, 3);
    check_update(&L.c, 6, 6, L.g.m, &L.d);
    CHECK(coord_wait_log(&L.c, "round 6:", "train loss", 5000));

    /* Round 7: the model's bytes do not match manifest.sha256: the channel ends the
     * session, the site reconnects. */
    float *wrong = fed_calloc(fed_model_num_params(L.g.m), sizeof(float));
    if (!wrong) return;
    CHECK_OK(send_round(&L.c, 7, 7, 7, &L.g.mf));
    CHECK_OK(fed_server_send_transfer(L.c.srv, L.c.peer, 7, wrong, L.g.mf.total_bytes));
    CHECK(coord_wait(&L.c, &L.c.left, 2, 5000));
    CHECK(coord_wait(&L.c, &L.c.joined, 3, 10000));
    CHECK_OK(fed_server_cancel_transfer(L.c.srv, L.c.peer, 7));
    fed_free(wrong);
    CHECK_INT(L.c.updates, 3);
}

TEST(site_life_byes_and_totals) {
    if (L.running) {
        /* A Bye without finished (a coordinator restarting) is a lost connection: the site
         * closes the session and connects again. */
        fed_msg bye = {.type = FED_MSG_BYE};
        bye.u.bye.reason = "coordinator restarting";
        int left = L.c.left, joined = L.c.joined;
        CHECK_OK(fed_server_send(L.c.srv, L.c.peer, &bye));
        CHECK(coord_wait(&L.c, &L.c.left, left + 1, 5000));
        CHECK(coord_wait(&L.c, &L.c.joined, joined + 1, 10000));
        CHECK_INT(cap_count("the coordinator is going away (coordinator restarting)", NULL), 1);
        /* Bye{finished} ends fed_site_run with FED_OK; the site closes the session. */
        bye.u.bye.reason = "federation finished";
        bye.u.bye.finished = true;
        left = L.c.left;
        CHECK_OK(fed_server_send(L.c.srv, L.c.peer, &bye));
        CHECK(coord_wait(&L.c, &L.c.left, left + 1, 5000));
        pthread_join(L.st.th, NULL);
        CHECK_OK(L.st.result);
        fed_site_stats ss;
        fed_site_stats_get(L.site, &ss);
        CHECK(ss.bye);
        CHECK_SIZE(ss.rounds_done, 3);
        CHECK_SIZE(ss.rounds_failed, 4);
        CHECK_SIZE(ss.connects, 4); /* 3 + the reconnection after the first Bye */
        CHECK_SIZE(ss.model_version, 6);
        CHECK_SIZE(ss.last_round, 7);
        /* Aggregates only: no cell of the data file in any log line. */
        CHECK_INT(cap_count("0.672", NULL), 0);
        CHECK_INT(cap_count("red", NULL), 0);
    }
    fed_site_destroy(&L.site);
    gmodel_free(&L.g);
    gmodel_free(&L.g5);
    data_free(&L.d);
    fed_free(L.c.delta);
    fed_server_destroy(&L.c.srv);
    fed_net_context_destroy(&L.zctx);
}

/* ---- secure aggregation, the site's side ----------------------------------------------- */

/* The key blocks of participant 0 must be signed by site-1, of 1 by site-2. */
static fed_err verify_sites(void *ctx, uint32_t id, const uint8_t *sb, size_t sl,
                            const uint8_t *sig, size_t sig_len) {
    char cn[FED_ID_CN_MAX + 1];
    fed_err e = fed_id_verify(ctx, sb, sl, sig, sig_len, true, cn);
    if (!e && strcmp(cn, id == 0 ? "site-1" : "site-2") != 0)
        e = fed_errorf(FED_EAUTH, "participant %u signed by %s", (unsigned)id, cn);
    return e;
}

static fed_err send_sa(coord *c, uint64_t round, uint8_t *msg, size_t len) {
    fed_msg m = {.type = FED_MSG_SECAGG};
    m.u.secagg.round = round;
    m.u.secagg.msg = msg;
    m.u.secagg.len = len;
    fed_err e = fed_server_send(c->srv, c->peer, &m);
    fed_free(msg);
    return e;
}

static fed_err send_secagg_round(coord *c, uint64_t round, uint64_t xfer, const gmodel *g,
                                 const fed_sa_params *p) {
    fed_msg m = {.type = FED_MSG_ROUND_START};
    fed_msg_round_start *rs = &m.u.round_start;
    rs->round = round;
    rs->model_version = 1;
    rs->config = train_config();
    rs->manifest = g->mf;
    rs->transfer_id = xfer;
    rs->deadline_ms = 60000;
    rs->has_secagg = true;
    rs->secagg = (fed_msg_secagg_params){.participant = 0,
                                         .n = p->n,
                                         .degree = p->degree,
                                         .threshold = p->threshold,
                                         .clip_range = p->clip_range,
                                         .quant_range = p->quant_range};
    memcpy(rs->secagg.graph_seed, p->graph_seed, 32);
    return fed_server_send(c->srv, c->peer, &m);
}

/* A whole securely aggregated round between the real site (participant 0, TLS, its keys
 * signed with site-1's certificate) and a scripted coordinator running the protocol's
 * server with a second participant (site-2's keys): the site checks the peer's
 * signature, shares, masks the very delta it would have sent in the clear, and helps
 * unmask; the decoded sum is that delta plus the peer's input to the rounding step.
 * Then a malformed SecAgg message fails the next round with an Error naming it. */
TEST(secagg_round) {
    coord c;
    memset(&c, 0, sizeof c);
    data d;
    gmodel g;
    CHECK(data_load(&d));
    CHECK(gmodel_make(&g, MLP4, 7));
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    fed_site *site = NULL;
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    CHECK_OK(fed_site_new(&site, &cfg));
    char p1[320], p2[320], ca[320], crl[320];
    snprintf(ca, sizeof ca, "%s/ca/ca.crt", certdir);
    snprintf(crl, sizeof crl, "%s/ca/crl.pem", certdir);
    snprintf(p1, sizeof p1, "%s/ca/sites/site-2/site-2.crt", certdir);
    snprintf(p2, sizeof p2, "%s/ca/sites/site-2/site-2.key", certdir);
    fed_id *peer_id = NULL;
    CHECK_OK(fed_id_new(&peer_id, p1, p2, ca, crl));
    size_t nt = g.m ? fed_model_num_trainable(g.m) : 0;
    fed_sa_params p;
    fed_sa_params_default(&p, 2, nt ? nt : 1);
    p.round = 1;
    memset(p.graph_seed, 7, sizeof p.graph_seed);
    fed_sa_server *srv = NULL;
    fed_sa_client *peer = NULL;
    CHECK_OK(fed_sa_server_new(&srv, &p));
    CHECK_OK(fed_sa_client_new(&peer, &p, 1));
    float *x = fed_calloc(nt ? nt : 1, sizeof(float)), *sum = fed_calloc(nt ? nt : 1, 4);
    float *want = fed_calloc(nt ? nt : 1, sizeof(float));
    if (!c.srv || !site || !d.train || !g.m || !peer_id || !srv || !peer || !x || !sum || !want)
        goto done;
    site_thread st = {.site = site};
    CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
    CHECK(coord_wait(&c, &c.joined, 1, 5000));
    CHECK(c.cap_secagg);

    CHECK_OK(send_secagg_round(&c, 1, 1, &g, &p));
    CHECK_OK(
        fed_server_send_transfer(c.srv, c.peer, 1, fed_model_params_const(g.m), g.mf.total_bytes));
    /* ADVERTISE, signed by site-1: the server's check accepts it. */
    CHECK(coord_wait(&c, &c.secaggs, 1, 5000));
    CHECK(c.sa_len > 16 && c.sa[0] == FED_SA_MSG_ADVERTISE);
    CHECK_SIZE(c.sa_round, 1);
    CHECK_OK(fed_sa_server_add_keys(srv, 0, c.sa, c.sa_len, verify_sites, peer_id));
    uint8_t block[FED_SA_SIGNED_LEN], sig[FED_ID_BLOB_MAX];
    size_t sig_len = 0, len = 0;
    uint8_t *msg = NULL;
    fed_sa_client_keys_to_sign(peer, block);
    CHECK_OK(fed_id_sign(peer_id, block, sizeof block, sig, sizeof sig, &sig_len));
    CHECK_OK(fed_sa_client_advertise(peer, sig, sig_len, &msg, &len));
    CHECK_OK(fed_sa_server_add_keys(srv, 1, msg, len, verify_sites, peer_id));
    fed_free(msg);
    /* NEIGHBOURS to both; SHARES back. */
    CHECK_OK(fed_sa_server_keys_for(srv, 0, &msg, &len));
    CHECK_OK(send_sa(&c, 1, msg, len));
    CHECK_OK(fed_sa_server_keys_for(srv, 1, &msg, &len));
    uint8_t *out = NULL;
    size_t out_len = 0;
    CHECK_OK(fed_sa_client_share(peer, msg, len, verify_sites, peer_id, &out, &out_len));
    fed_free(msg);
    CHECK_OK(fed_sa_server_add_shares(srv, 1, out, out_len));
    fed_free(out);
    CHECK(coord_wait(&c, &c.secaggs, 2, 5000));
    CHECK(c.sa_len > 16 && c.sa[0] == FED_SA_MSG_SHARES);
    CHECK_OK(fed_sa_server_add_shares(srv, 0, c.sa, c.sa_len));
    /* DELIVERY to both; the peer masks its input, the site its trained delta. */
    CHECK_OK(fed_sa_server_shares_for(srv, 0, &msg, &len));
    CHECK_OK(send_sa(&c, 1, msg, len));
    CHECK_OK(fed_sa_server_shares_for(srv, 1, &msg, &len));
    for (size_t i = 0; i < nt; i++) x[i] = 0.001f * (float)(i % 7) - 0.003f;
    CHECK_OK(fed_sa_client_mask(peer, msg, len, x, nt, NULL, &out, &out_len));
    fed_free(msg);
    CHECK_OK(fed_sa_server_add_masked(srv, 1, out, out_len));
    fed_free(out);
    CHECK(coord_wait(&c, &c.done, 1, 10000));
    CHECK_INT(c.updates, 1);
    CHECK_INT(c.up.encoding, FED_ENCODING_SECAGG_MASKED);
    CHECK_SIZE(c.up.total_bytes, fed_sa_msg_max(&p, FED_SA_MSG_MASKED));
    CHECK_OK(fed_sa_server_add_masked(srv, 0, (const uint8_t *)c.delta, (size_t)c.up.total_bytes));
    /* UNMASK_REQUEST to both; the sum decodes. */
    CHECK_OK(fed_sa_server_unmask_for(srv, 0, &msg, &len));
    CHECK_OK(send_sa(&c, 1, msg, len));
    CHECK_OK(fed_sa_server_unmask_for(srv, 1, &msg, &len));
    CHECK_OK(fed_sa_client_unmask(peer, msg, len, &out, &out_len));
    fed_free(msg);
    CHECK_OK(fed_sa_server_add_unmask(srv, 1, out, out_len));
    fed_free(out);
    CHECK(coord_wait(&c, &c.secaggs, 3, 5000));
    CHECK(c.sa_len > 16 && c.sa[0] == FED_SA_MSG_UNMASK_REPLY);
    CHECK_OK(fed_sa_server_add_unmask(srv, 0, c.sa, c.sa_len));
    size_t survivors = 0;
    CHECK_OK(fed_sa_server_finalize(srv, sum, NULL, nt, &survivors));
    CHECK_SIZE(survivors, 2);
    CHECK_SIZE(expected_delta(g.m, d.train, 1, want), nt);
    double worst = 0, step = 2.0 * p.clip_range / (double)p.quant_range;
    for (size_t i = 0; i < nt; i++) {
        double e = fabs((double)sum[i] - (double)x[i] - (double)want[i]);
        if (e > worst) worst = e;
    }
    CHECK(worst <= 2 * step + 1e-6);
    CHECK(coord_wait_log(&c, "round 1:", "train loss", 5000));

    /* Round 2: a truncated NEIGHBOURS fails the round; the Error names the message. */
    p.round = 2;
    int errors = c.errors;
    CHECK_OK(send_secagg_round(&c, 2, 0, &g, &p)); /* the site holds version 1 */
    CHECK(coord_wait(&c, &c.secaggs, 4, 5000));
    /* count 1 but no entry: truncated (a count of 0 would be "too few neighbours") */
    uint8_t bad[20] = {FED_SA_MSG_NEIGHBOURS, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
    msg = fed_malloc(sizeof bad);
    if (msg) memcpy(msg, bad, sizeof bad);
    CHECK_OK(send_sa(&c, 2, msg, sizeof bad));
    CHECK(coord_wait(&c, &c.errors, errors + 1, 5000));
    CHECK_INT(c.err_code, 3); /* ERR_FORMAT */
    CHECK_CONTAINS(c.err_text, "NEIGHBOURS");

    st.stop = 1;
    pthread_join(st.th, NULL);
    CHECK_OK(st.result);
done:
    fed_free(x);
    fed_free(sum);
    fed_free(want);
    fed_sa_server_destroy(&srv);
    fed_sa_client_destroy(&peer);
    fed_id_destroy(&peer_id);
    fed_site_destroy(&site);
    gmodel_free(&g);
    data_free(&d);
    fed_free(c.delta);
    fed_free(c.sa);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* External training (the simulator's mode): the site's thread only steps the channel;
 * a second thread trains the claimed job with its own fed_site_trainer. The update is
 * bit for bit the one the blocking site sends; a lean site (keep_model false) holds no
 * model after a round, so a RoundStart without weights is answered "no model version";
 * a manifest that does not fit fails in the worker and is reported by the site thread. */
typedef struct ext_site {
    fed_site *site;
    fed_site_trainer *trainer;
    volatile int stop;
    int jobs;
    fed_err result;
    pthread_t th;
} ext_site;

static void *ext_worker(void *p) {
    ext_site *e = p;
    fed_site_job_run(e->site, e->trainer);
    return NULL;
}

static void *ext_main(void *p) {
    ext_site *e = p;
    pthread_t w;
    bool working = false, done = false;
    e->result = FED_OK;
    while (!e->stop && !done) {
        if ((e->result = fed_site_step(e->site, 5, &done))) break;
        if (!working && fed_site_job_ready(e->site)) {
            fed_site_job_claim(e->site);
            if (pthread_create(&w, NULL, ext_worker, e) != 0) break;
            working = true;
        }
        if (working && fed_site_job_done(e->site)) {
            pthread_join(w, NULL);
            working = false;
            e->jobs++;
            fed_site_job_finish(e->site);
        }
    }
    if (working) pthread_join(w, NULL);
    return NULL;
}

TEST(external_training) {
    coord c;
    memset(&c, 0, sizeof c);
    data d;
    gmodel g, g5;
    memset(&g5, 0, sizeof g5);
    CHECK(data_load(&d));
    CHECK(gmodel_make(&g, MLP4, 7));
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    ext_site e;
    memset(&e, 0, sizeof e);
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    cfg.external_training = true;
    cfg.keep_model = false;
    CHECK_OK(fed_site_new(&e.site, &cfg));
    CHECK_OK(fed_site_trainer_new(&e.trainer));
    if (!c.srv || !e.site || !e.trainer || !d.train || !g.m) goto done;
    /* The blocking loop is not for such a site. */
    CHECK_INT(fed_site_run(e.site, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_site_errmsg(e.site), "trains externally");
    CHECK_INT(pthread_create(&e.th, NULL, ext_main, &e), 0);
    CHECK(coord_wait(&c, &c.joined, 1, 5000));

    CHECK_OK(send_round(&c, 1, 1, 1, &g.mf));
    CHECK_OK(
        fed_server_send_transfer(c.srv, c.peer, 1, fed_model_params_const(g.m), g.mf.total_bytes));
    CHECK(coord_wait(&c, &c.done, 1, 10000));
    CHECK_INT(c.updates, 1);
    check_update(&c, 1, 1, g.m, &d);
    CHECK(coord_wait_log(&c, "round 1:", "train loss", 5000));

    /* Lean: the weights were not kept. */
    CHECK_OK(send_round(&c, 2, 1, 0, &g.mf));
    CHECK(coord_wait(&c, &c.errors, 1, 5000));
    CHECK_INT(c.err_code, 102); /* ERR_NO_MODEL */
    CHECK_STR(c.err_text, "no model version 1");

    /* A manifest that does not fit: the worker's error reaches the coordinator. */
    CHECK(gmodel_make(&g5, MLP5, 8));
    if (g5.m) {
        fed_msg_manifest bad = g.mf;
        bad.arch = g5.arch;
        CHECK_OK(send_round(&c, 3, 3, 3, &bad));
        CHECK_OK(fed_server_send_transfer(c.srv, c.peer, 3, fed_model_params_const(g.m),
                                          g.mf.total_bytes));
        CHECK(coord_wait(&c, &c.errors, 2, 5000));
        CHECK_INT(c.err_code, 7);
        CHECK_CONTAINS(c.err_text, "manifest.tensors[0]");
    }

    /* Round 4 trains again from fresh weights, with the same result as round 1 would
     * give for round 4's seed. */
    CHECK_OK(send_round(&c, 4, 4, 4, &g.mf));
    CHECK_OK(
        fed_server_send_transfer(c.srv, c.peer, 4, fed_model_params_const(g.m), g.mf.total_bytes));
    CHECK(coord_wait(&c, &c.done, 2, 10000));
    check_update(&c, 4, 4, g.m, &d);
    fed_site_stats ss;

    fed_msg bye = {.type = FED_MSG_BYE};
    bye.u.bye.reason = "federation finished";
    bye.u.bye.finished = true;
    CHECK_OK(fed_server_send(c.srv, c.peer, &bye));
    int64_t end = now_ms() + 5000;
    while (!e.stop && now_ms() < end) {
        coord_poll(&c, 5);
        fed_site_stats_get(e.site, &ss);
        if (ss.bye) break;
    }
    e.stop = 1;
    pthread_join(e.th, NULL);
    CHECK_OK(e.result);
    fed_site_stats_get(e.site, &ss);
    CHECK(ss.bye);
    CHECK_INT(e.jobs, 3);
    CHECK_SIZE(ss.rounds_done, 2);
    CHECK_SIZE(ss.rounds_failed, 2);
    CHECK_SIZE(ss.model_version, 0); /* lean */
done:
    fed_site_trainer_destroy(&e.trainer);
    fed_site_destroy(&e.site);
    gmodel_free(&g);
    gmodel_free(&g5);
    data_free(&d);
    fed_free(c.delta);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* A stop request: the site says Bye and fed_site_run returns FED_OK. */
/* --state-dir: a residual file the site cannot read stops it at start-up with one line
 * naming the file (its own state: never silently dropped). */
TEST(state_dir_residual_checked) {
    char dir[] = "/tmp/fedtune-state-XXXXXX", path[96];
    if (!mkdtemp(dir)) {
        CHECK(false);
        return;
    }
    snprintf(path, sizeof path, "%s/residual.bin", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("FEDRESv1 not a residual", f);
        fclose(f);
    }
    fed_site *site = NULL;
    fed_site_config cfg = site_config("tcp://127.0.0.1:1");
    cfg.state_dir = dir;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EFORMAT);
    CHECK(site == NULL);
    CHECK_CONTAINS(fed_errmsg(), "residual.bin: 23 bytes, too short for a residual file");
    remove(path);
    CHECK_OK(fed_site_new(&site, &cfg)); /* no file: nothing carried yet */
    fed_site_destroy(&site);
    rmdir(dir);
}

TEST(stop_says_bye) {
    coord c;
    memset(&c, 0, sizeof c);
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    fed_site *site = NULL;
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    cfg.zmq_ctx = zctx; /* shared, as a simulator would */
    CHECK_OK(fed_site_new(&site, &cfg));
    if (c.srv && site) {
        site_thread st = {.site = site};
        CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
        CHECK(coord_wait(&c, &c.joined, 1, 5000));
        st.stop = 1;
        CHECK(coord_wait(&c, &c.byes, 1, 5000));
        pthread_join(st.th, NULL);
        CHECK_OK(st.result);
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK(!ss.bye);
        CHECK_SIZE(ss.connects, 1);
        CHECK(coord_wait(&c, &c.left, 1, 5000));
    }
    fed_site_destroy(&site);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* A RoundStart while the site trains ends that training after the epoch; the new round
 * is answered. A stop request while training ends it too, and the site says Bye. */
TEST(interrupted_training) {
    coord c;
    memset(&c, 0, sizeof c);
    gmodel g;
    CHECK(gmodel_make(&g, MLP4, 11));
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    fed_site *site = NULL;
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    cfg.max_epochs = 0; /* no cap: round 1 would train for a very long time */
    cfg.max_batch = 0;
    CHECK_OK(fed_site_new(&site, &cfg));
    if (c.srv && site && g.m) {
        site_thread st = {.site = site};
        CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
        CHECK(coord_wait(&c, &c.joined, 1, 5000));
        CHECK_OK(send_round_epochs(&c, 1, 1, 1, &g.mf, 1000000));
        CHECK_OK(fed_server_send_transfer(c.srv, c.peer, 1, fed_model_params_const(g.m),
                                          g.mf.total_bytes));
        CHECK(coord_wait(&c, &c.sent, 1, 5000)); /* the site has the model: it trains */
        coord_poll(&c, 200);
        CHECK_OK(send_round_epochs(&c, 2, 1, 0, &g.mf, 1));
        CHECK(coord_wait(&c, &c.done, 1, 10000));
        CHECK_SIZE(c.up.round, 2);
        CHECK_INT(c.updates, 1);
        CHECK(coord_wait_log(&c, "round 1 dropped", "round 2 started", 5000));
        /* Stop while training round 3. */
        CHECK_OK(send_round_epochs(&c, 3, 1, 0, &g.mf, 1000000));
        coord_poll(&c, 300);
        st.stop = 1;
        CHECK(coord_wait(&c, &c.byes, 1, 10000));
        pthread_join(st.th, NULL);
        CHECK_OK(st.result);
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK_SIZE(ss.rounds_done, 1);
        CHECK_SIZE(ss.rounds_dropped, 2);
        CHECK_INT(c.updates, 1);
    }
    fed_site_destroy(&site);
    gmodel_free(&g);
    fed_free(c.delta);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* RoundStart.deadline_ms bounds the site's training: with too little time for one step
 * (the upload's margin is at least 0.1 s) the site skips the round with an Error that
 * says so; with a training far longer than the deadline it stops at the deadline less
 * the margin and sends what it has, flagged out_of_time, weighted by the examples it
 * went over. */
TEST(deadline_bounds_training) {
    coord c;
    memset(&c, 0, sizeof c);
    gmodel g;
    data d;
    CHECK(data_load(&d));
    CHECK(gmodel_make(&g, MLP4, 11));
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    fed_site *site = NULL;
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    cfg.max_epochs = 0;
    cfg.max_batch = 0;
    CHECK_OK(fed_site_new(&site, &cfg));
    if (c.srv && site && g.m && d.train) {
        site_thread st = {.site = site};
        CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
        CHECK(coord_wait(&c, &c.joined, 1, 5000));
        round_deadline_ms = 50; /* less than the 0.1 s margin */
        CHECK_OK(send_round_epochs(&c, 1, 1, 1, &g.mf, 5));
        CHECK_OK(fed_server_send_transfer(c.srv, c.peer, 1, fed_model_params_const(g.m),
                                          g.mf.total_bytes));
        CHECK(coord_wait(&c, &c.errors, 1, 5000));
        CHECK_INT(c.err_code, 14); /* ERR_TIMEOUT */
        CHECK_STR(c.err_text, "deadline: no training step fitted in the 0.05 s the round "
                              "allows (less the upload's margin)");
        CHECK_SIZE(c.err_round, 1);
        CHECK_SIZE(c.err_attempt, 3);
        CHECK_INT(c.updates, 0);
        round_deadline_ms = 1500;
        CHECK_OK(send_round_epochs(&c, 2, 1, 0, &g.mf, 1000000));
        CHECK(coord_wait(&c, &c.done, 1, 10000));
        CHECK_SIZE(c.up.round, 2);
        CHECK_NEAR(metric(&c, "out_of_time"), 1.0, 0.0);
        CHECK(metric(&c, "steps") >= 1.0);
        CHECK(c.up.examples >= 1 && c.up.examples <= d.train->n);
        /* The weight is what it went over: all of it after a whole epoch. */
        double steps = metric(&c, "steps"), per_epoch = (double)((d.train->n + 31) / 32);
        if (steps >= per_epoch) CHECK_SIZE(c.up.examples, d.train->n);
        CHECK(coord_wait_log(&c, "round 2: training stopped at the deadline", "sending", 5000));
        round_deadline_ms = 60000;
        st.stop = 1;
        pthread_join(st.th, NULL);
        CHECK_OK(st.result);
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK_SIZE(ss.rounds_failed, 1);
        CHECK_SIZE(ss.rounds_done, 1);
    }
    fed_site_destroy(&site);
    gmodel_free(&g);
    data_free(&d);
    fed_free(c.delta);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* The statistics round (RoundStart.stats, no weights): the site answers with the exact
 * moments of its raw training split (before its own standardisation) as a MOMENTS_F32
 * update with no metrics; a model whose inputs its data do not fit gets an Error. */
TEST(statistics_round) {
    coord c;
    memset(&c, 0, sizeof c);
    gmodel g, g5;
    CHECK(gmodel_make(&g, MLP4, 3));
    CHECK(gmodel_make(&g5, MLP5, 3));
    /* The site's raw training split: the fixture split as the site splits it. */
    fed_dataset *all = NULL, *train = NULL, *test = NULL;
    CHECK_OK(fed_data_load(&all, csv_path, NULL));
    CHECK_OK(fed_data_split(all, 0.0, 0.2, 5, &train, NULL, &test));
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    fed_site *site = NULL;
    fed_site_config cfg = site_config(c.srv ? fed_server_endpoint(c.srv) : "");
    CHECK_OK(fed_site_new(&site, &cfg)); /* standardize on: its own split is rescaled */
    if (c.srv && site && g.m && train) {
        site_thread st = {.site = site};
        CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
        CHECK(coord_wait(&c, &c.joined, 1, 5000));
        fed_msg m = {.type = FED_MSG_ROUND_START};
        fed_msg_round_start *rs = &m.u.round_start;
        rs->round = 0;
        rs->attempt = 1;
        rs->model_version = 1;
        rs->config = train_config();
        rs->manifest = g.mf;
        rs->deadline_ms = 60000;
        rs->stats = true;
        CHECK_OK(fed_server_send(c.srv, c.peer, &m));
        CHECK(coord_wait(&c, &c.done, 1, 5000));
        size_t len = fed_mom_len(4);
        CHECK_INT(c.up.encoding, FED_ENCODING_MOMENTS_F32);
        CHECK_SIZE(c.up.round, 0);
        CHECK_SIZE(c.up.attempt, 1);
        CHECK_SIZE(c.up.examples, train->n);
        CHECK_SIZE(c.up.total_bytes, len * 4);
        CHECK_SIZE(c.nmetrics, 0);
        float *want = fed_mallocarray(len, sizeof(float));
        CHECK_OK(fed_mom_encode(train, 4, want));
        CHECK_MEM(c.delta, want, len * sizeof(float));
        fed_free(want);
        CHECK(coord_wait_log(&c, "statistics of", "training examples sent", 5000));
        /* A model of 5 inputs for 4 features: refused with the shapes only. */
        rs->manifest = g5.mf;
        rs->attempt = 2;
        CHECK_OK(fed_server_send(c.srv, c.peer, &m));
        CHECK(coord_wait(&c, &c.errors, 1, 5000));
        CHECK_INT(c.err_code, 7);
        CHECK_STR(c.err_text, "statistics: the local data (4 features, 3 classes) do not fit "
                              "the model (5 inputs, 3 outputs)");
        CHECK_SIZE(c.err_round, 0);
        CHECK_SIZE(c.err_attempt, 2);
        st.stop = 1;
        pthread_join(st.th, NULL);
        CHECK_OK(st.result);
    }
    fed_site_destroy(&site);
    gmodel_free(&g);
    gmodel_free(&g5);
    fed_data_destroy(&all);
    fed_data_destroy(&train);
    fed_data_destroy(&test);
    fed_free(c.delta);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* A site started before its coordinator joins once the coordinator is up. */
TEST(late_coordinator) {
    coord c;
    memset(&c, 0, sizeof c);
    void *zctx = fed_net_context_new();
    fed_server_config sc = server_config("tcp://127.0.0.1:0");
    CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
    if (!c.srv) return;
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s", fed_server_endpoint(c.srv));
    fed_server_destroy(&c.srv); /* the port is free again, nobody listens */
    fed_site *site = NULL;
    fed_site_config cfg = site_config(endpoint);
    cfg.net.handshake_timeout_ms = 300;
    CHECK_OK(fed_site_new(&site, &cfg));
    if (site) {
        site_thread st = {.site = site};
        CHECK_INT(pthread_create(&st.th, NULL, site_main, &st), 0);
        struct timespec ts = {0, 800 * 1000000L};
        nanosleep(&ts, NULL);
        sc.endpoint = endpoint;
        CHECK_OK(fed_server_new(&c.srv, zctx, &sc));
        if (c.srv) CHECK(coord_wait(&c, &c.joined, 1, 10000));
        st.stop = 1;
        pthread_join(st.th, NULL);
        CHECK_OK(st.result);
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK(ss.connects >= 1);
    }
    fed_site_destroy(&site);
    fed_server_destroy(&c.srv);
    fed_net_context_destroy(&zctx);
}

/* A train_fn that is never called (config_errors makes no connection). */
static fed_err no_training(void *user, const fed_site_round_in *in, fed_site_round_out *out) {
    (void)user;
    (void)in;
    (void)out;
    return fed_errorf(FED_EINVAL, "not called");
}

TEST(config_errors) {
    fed_site *site = NULL;
    fed_site_config cfg = site_config("tcp://127.0.0.1:1");
    cfg.data = "/nonexistent/site.csv";
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "/nonexistent/site.csv");
    cfg = site_config("tcp://127.0.0.1:1");
    cfg.test_split = 0.95;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "test-split");
    cfg = site_config(NULL);
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "coordinator");
    cfg = site_config("tcp://127.0.0.1:1");
    cfg.backoff_max_ms = 10;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    cfg = site_config("tcp://127.0.0.1:1");
    cfg.data = NULL;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK(site == NULL);
    /* Delegated training (a relay): no data, a bound to announce; then it is made, and its
     * Hello's count is that bound. */
    cfg = site_config("tcp://127.0.0.1:1");
    cfg.train_fn = no_training;
    cfg.announce_examples = 500;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "data: a site with delegated training (train_fn) has none");
    cfg.data = NULL;
    cfg.announce_examples = 0;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "announce-examples 0: must be in [1, 2^53]");
    cfg.announce_examples = 500;
    cfg.external_training = true;
    CHECK_ERR(fed_site_new(&site, &cfg), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "external training: not with delegated training");
    cfg.external_training = false;
    CHECK_OK(fed_site_new(&site, &cfg));
    if (site) {
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK_SIZE(ss.train_examples, 500);
        CHECK_SIZE(ss.eval_examples, 0);
    }
    fed_site_destroy(&site);
    /* Data in memory instead of a file, no test split, no standardisation. */
    fed_dataset *mem = NULL;
    CHECK_OK(fed_data_load(&mem, csv_path, NULL));
    cfg = site_config("tcp://127.0.0.1:1");
    cfg.data = NULL;
    cfg.dataset = mem;
    cfg.test_split = 0.0;
    cfg.standardize = false;
    CHECK_OK(fed_site_new(&site, &cfg));
    if (site) {
        fed_site_stats ss;
        fed_site_stats_get(site, &ss);
        CHECK_SIZE(ss.train_examples, 150);
        CHECK_SIZE(ss.eval_examples, 0);
        CHECK_SIZE(ss.features, 4);
        CHECK_SIZE(ss.classes, 3);
        CHECK_SIZE(ss.model_version, 0);
    }
    fed_site_destroy(&site);
    fed_site_destroy(&site); /* NULL-safe */
    fed_data_destroy(&mem);
}

TEST(fit_config_mapping) {
    fed_msg_train_config tc = train_config();
    fed_fit_config f;
    CHECK_OK(fed_train_spec_fit(&tc, 3, 2, 16, &f));
    CHECK_INT(f.optim.kind, FED_OPT_SGD);
    CHECK_NEAR(f.optim.momentum, 0.9, 1e-7);
    CHECK_NEAR(f.optim.weight_decay, 1e-4, 1e-9);
    CHECK_NEAR(f.optim.clip_norm, 5.0, 0.0);
    CHECK_INT(f.schedule.kind, FED_SCHED_CONSTANT);
    CHECK_NEAR(f.schedule.lr, 0.05, 1e-8);
    CHECK_SIZE(f.epochs, 2);
    CHECK_SIZE(f.batch, 16);
    CHECK_SIZE(f.seed, 45);
    CHECK_SIZE(f.patience, 0);
    CHECK(!f.restore_best);
    CHECK(f.on_epoch == NULL && f.on_step == NULL);
    CHECK_OK(fed_train_spec_fit(&tc, 3, 0, 0, &f));
    CHECK_SIZE(f.epochs, 5);
    CHECK_SIZE(f.batch, 32);
    tc.optimizer = "adam";
    tc.max_steps = 7;
    CHECK_OK(fed_train_spec_fit(&tc, 1, 0, 0, &f));
    CHECK_INT(f.optim.kind, FED_OPT_ADAM);
    CHECK_NEAR(f.optim.momentum, 0.0, 0.0); /* sgd only */
    CHECK_SIZE(f.max_steps, 7);
    tc.optimizer = "";
    CHECK_OK(fed_train_spec_fit(&tc, 1, 0, 0, &f));
    CHECK_INT(f.optim.kind, FED_OPT_SGD);
    tc.optimizer = "rmsprop";
    CHECK_ERR(fed_train_spec_fit(&tc, 1, 0, 0, &f), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "config.optimizer");
    tc = train_config();
    tc.lr = 0.0f;
    CHECK_ERR(fed_train_spec_fit(&tc, 1, 0, 0, &f), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "config.lr");
    tc = train_config();
    tc.epochs = 0;
    CHECK_ERR(fed_train_spec_fit(&tc, 1, 0, 0, &f), FED_EINVAL);
    tc = train_config();
    tc.momentum = 1.5f;
    CHECK_ERR(fed_train_spec_fit(&tc, 1, 0, 0, &f), FED_EINVAL);
}

int main(void) {
    fed_log_set_handler(cap_handler, NULL, FED_LOG_DEBUG);
    if (setup() != 0) {
        fprintf(stderr, "could not make certificates and data in %s\n", certdir);
        certs_remove();
        return 1;
    }
    RUN(fit_config_mapping);
    RUN(config_errors);
    RUN(site_life_hello); /* these five in this order: */
    RUN(site_life_three_rounds);
    RUN(site_life_bad_models);
    RUN(site_life_lost_connections);
    RUN(site_life_byes_and_totals);
    RUN(secagg_round);
    RUN(external_training);
    RUN(state_dir_residual_checked);
    RUN(stop_says_bye);
    RUN(interrupted_training);
    RUN(late_coordinator);
    RUN(deadline_bounds_training);
    RUN(statistics_round);
    certs_remove();
    return test_report();
}
