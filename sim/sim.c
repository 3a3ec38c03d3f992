/* The simulator (sim/sim.h): the coordinator on a thread, every virtual site stepped by
 * the calling thread, training on a pool of workers. With TLS, the certificates go into
 * a temporary folder (sim/certs.h), removed when the run ends. Across processes (role)
 * one process runs the coordinator alone and the others their share of the sites. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp */
#endif
#include "sim/sim.h"

#include "client/client.h"
#include "sim/attack.h"
#include "sim/certs.h"
#include "sim/wake.h"
#include "training/fit.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/rng.h"
#include "net/channel.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

fed_sim_config fed_sim_default_config(void) {
    fed_sim_config c;
    memset(&c, 0, sizeof c);
    c.part = fed_part_default_config();
    c.coord = fed_coord_default_config();
    c.coord.bye_wait_ms = 100; /* its sites close when the coordinator has ended */
    c.coord.min_fit = 1;
    c.coord.deadline_ms = 600000;
    c.coord.input_stats = false; /* the simulator prepares the data once, for all its sites */
    c.workers = 1;
    c.seed = 1;
    return c;
}

/* A uniform draw in [0, 1) for (site, round, what): the same in every run. */
static double draw(uint64_t seed, size_t site, uint64_t round, uint64_t what) {
    uint64_t h = fed_mix64(seed ^ fed_mix64((uint64_t)site * 0x9e3779b97f4a7c15ull ^
                                            fed_mix64(round * 1000003u + what)));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- the worker pool ----------------------------------------------------------------- */

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t *queue;       /* ring of the sites whose job was claimed */
    fed_site **sites;    /* (cap) every site, by index */
    fed__sim_wake *wake; /* told when a job ends */
    size_t cap, head, len;
    bool quit;
    pthread_t *th;
    size_t nth;
    fed_err err; /* a worker that could not make its trainer */
} pool;

static void *worker_main(void *p) {
    pool *q = p;
    fed_site_trainer *t = NULL;
    if (fed_site_trainer_new(&t) != FED_OK) {
        pthread_mutex_lock(&q->mu);
        q->err = FED_ENOMEM;
        pthread_mutex_unlock(&q->mu);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->quit && q->len == 0) pthread_cond_wait(&q->cv, &q->mu);
        if (q->quit) {
            pthread_mutex_unlock(&q->mu);
            break;
        }
        size_t i = q->queue[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
        pthread_mutex_unlock(&q->mu);
        fed_site_job_run(q->sites[i], t);
        fed__sim_wake_job_done(q->wake, i);
    }
    fed_site_trainer_destroy(&t);
    return NULL;
}

static void pool_push(pool *q, size_t i) {
    pthread_mutex_lock(&q->mu);
    q->queue[(q->head + q->len) % q->cap] = i; /* cap = sites: never full */
    q->len++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- the coordinator's thread --------------------------------------------------------- */

typedef struct coord_thread {
    fed_coord *c;
    atomic_bool stop; /* the sites' side gave up */
    atomic_bool done; /* the engine ended (DONE or an error) */
    fed_err err;
    char errmsg[512];
    pthread_t th;
} coord_thread;

static void *coord_main(void *p) {
    coord_thread *ct = p;
    ct->err = FED_OK;
    while (!atomic_load(&ct->stop) && fed_coord_get_state(ct->c) != FED_COORD_DONE) {
        fed_err err = fed_coord_step(ct->c, 5);
        if (err) {
            ct->err = err;
            snprintf(ct->errmsg, sizeof ct->errmsg, "%s", fed_errmsg());
            break;
        }
    }
    atomic_store(&ct->done, true);
    return NULL;
}

/* The caller's name of site i, else "site-007": names sort in site order (ordered_uploads
 * folds in CN order). */
static void site_name(char out[64], const char *const *names, size_t i, int width) {
    int w = width < 3 ? 3 : width > 7 ? 7 : width;
    if (names)
        snprintf(out, 64, "%s", names[i]);
    else
        snprintf(out, 64, "site-%0*zu", w, i % 10000000u);
}

static int name_width(size_t n) {
    int w = 1;
    for (size_t k = n > 0 ? n - 1 : 0; k >= 10; k /= 10) w++;
    return w < 3 ? 3 : w;
}

void fed_sim_site_name(char out[64], const fed_sim_config *cfg, size_t n, size_t i) {
    site_name(out, cfg->site_names, i, name_width(n));
}

/* Selection sampling (Knuth's algorithm S) under the seed: site i is taken with
 * probability (still to take) / (sites left), so exactly m are, each set of m equally
 * likely, with no allocation. */
size_t fed_sim_malicious(const fed_sim_config *cfg, size_t n, bool *is_bad) {
    double f = cfg->malicious;
    size_t m = f > 0.0 ? (size_t)floor(f * (double)n + 1e-9) : 0, taken = 0;
    if (m > n) m = n;
    for (size_t i = 0; i < n; i++) {
        double u = draw(cfg->seed ^ 0x6d616c696369ull, i, 0, 3); /* "malici" */
        is_bad[i] = taken < m && u * (double)(n - i) < (double)(m - taken);
        taken += is_bad[i];
    }
    return m;
}

/* The sites a round samples of n (the coordinator's rule: ceil(fraction n), at least 1). */
static size_t sampled_per_round(const fed_sim_config *cfg, size_t n) {
    double k = ceil(cfg->coord.fraction * (double)n - 1e-9);
    return k < 1 ? 1 : (size_t)k;
}

double fed_sim_lie_z(const fed_sim_config *cfg, size_t n, size_t nbad, size_t *sampled, size_t *f) {
    size_t k = sampled_per_round(cfg, n);
    size_t m = n ? (size_t)llround((double)nbad * (double)k / (double)n) : 0;
    if (m < 1) m = 1;
    if (sampled) *sampled = k;
    if (f) *f = m;
    return isnan(cfg->attack.param) ? fed_site_lie_z(k, m) : cfg->attack.param;
}

/* ---- the simulation ------------------------------------------------------------------- */

/* Every site holds one descriptor (its ZeroMQ socket's mailbox): raise the soft limit
 * towards the hard one if the sites need it. */
static fed_err reserve_fds(size_t sites) {
    rlim_t need = (rlim_t)sites + 256;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return FED_OK;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        struct rlimit nl = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) rl.rlim_cur = want;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        return fed_errorf(FED_EINVAL,
                          "%zu sites need about %llu open files; this process may open %llu "
                          "(raise the hard limit: ulimit -Hn)",
                          sites, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
    return FED_OK;
}

static fed_err check(const fed_sim_config *c) {
    if (!c->train || c->train->n == 0) return fed_errorf(FED_EINVAL, "sim: no training data");
    if (!c->coord.model) return fed_errorf(FED_EINVAL, "sim: no initial model");
    const fed_partition *p = c->partition;
    if (p) {
        if (p->clients < 1 || !p->offsets || (p->n && !p->index) || p->offsets[0] != 0 ||
            p->offsets[p->clients] != p->n)
            return fed_errorf(FED_EINVAL, "sim: the partition's offsets are inconsistent");
        for (size_t i = 0; i < p->clients; i++)
            if (p->offsets[i + 1] < p->offsets[i])
                return fed_errorf(FED_EINVAL, "sim: partition client %zu: offsets decrease", i);
        for (size_t j = 0; j < p->n; j++)
            if (p->index[j] >= c->train->n)
                return fed_errorf(FED_EINVAL,
                                  "sim: partition entry %zu: example %" PRIu32
                                  " is not below the %zu of the data",
                                  j, p->index[j], c->train->n);
    }
    if (c->role != FED_SIM_ALL &&
        (!c->endpoint || strncmp(c->endpoint, "tcp://", 6) != 0 || !c->tls))
        return fed_errorf(FED_EINVAL, "sim: across processes the sites connect over tcp:// "
                                      "with TLS (give endpoint and tls)");
    if (c->role == FED_SIM_SITES && c->host_index >= c->host_stride)
        return fed_errorf(FED_EINVAL, "sim: host_index %zu is not below host_stride %zu",
                          c->host_index, c->host_stride);
    if (c->cert_dir && strlen(c->cert_dir) > 3000)
        return fed_errorf(FED_EINVAL, "sim: cert_dir is longer than 3000 bytes");
    if (c->workers < 1 || c->workers > 1024)
        return fed_errorf(FED_EINVAL, "workers %zu: must be in 1..1024", c->workers);
    if (!(c->dropout >= 0.0 && c->dropout < 1.0))
        return fed_errorf(FED_EINVAL, "dropout %g: must be in [0, 1)", c->dropout);
    if (!(c->stragglers >= 0.0 && c->stragglers <= 1.0))
        return fed_errorf(FED_EINVAL, "stragglers %g: must be in [0, 1]", c->stragglers);
    if (!(c->straggler_delay_s >= 0.0 && c->straggler_delay_s <= 86400.0))
        return fed_errorf(FED_EINVAL, "straggler-delay %g: must be in [0, 86400] s",
                          c->straggler_delay_s);
    if (!(c->client_test_split >= 0.0 && c->client_test_split <= 0.9))
        return fed_errorf(FED_EINVAL, "client-test-split %g: must be in [0, 0.9]",
                          c->client_test_split);
    if (!(c->malicious >= 0.0 && c->malicious <= 0.5))
        return fed_errorf(FED_EINVAL, "malicious %g: must be in [0, 0.5]", c->malicious);
    if (c->malicious > 0.0 && c->attack.kind == FED_ATTACK_NONE)
        return fed_errorf(FED_EINVAL, "malicious %g: no attack given", c->malicious);
    if (c->attack.kind == FED_ATTACK_SCALE && !isfinite(c->attack.param))
        return fed_errorf(FED_EINVAL, "attack scale: K %g must be finite", c->attack.param);
    if (c->attack.kind == FED_ATTACK_NOISE && !(isfinite(c->attack.param) && c->attack.param > 0))
        return fed_errorf(FED_EINVAL, "attack noise: S %g must be finite and > 0", c->attack.param);
    if (c->attack.kind == FED_ATTACK_LIE &&
        !(isnan(c->attack.param) || (isfinite(c->attack.param) && c->attack.param >= 0)))
        return fed_errorf(FED_EINVAL, "attack lie: Z %g must be finite and >= 0", c->attack.param);
    if (c->attack.kind == FED_ATTACK_BACKDOOR) {
        double l = c->attack.param;
        if (!(l >= 0 && l < (double)c->train->num_classes && l == floor(l)))
            return fed_errorf(FED_EINVAL, "attack backdoor: label %g is not one of the %zu classes",
                              l, c->train->num_classes);
        if (c->coord.input_stats)
            return fed_errorf(FED_EINVAL, "attack backdoor: its trigger is set before the "
                                          "input_stats transform, which its test set lacks: "
                                          "use one or the other");
    }
    return FED_OK;
}

/* What the sites' thread tracks of one virtual site. */
typedef struct vsite {
    fed_site *s;
    bool done;    /* the coordinator said its final Bye */
    bool running; /* its job is with the pool */
    bool waiting; /* a straggler: claimed, queued at start_at */
    bool drop;    /* vanish once trained */
    double start_at;
    uint64_t round; /* of the last job */
    uint64_t tries; /* jobs of that round before the last (a retried round) */
    bool reached;   /* it has been connected (connect_timeout_s) */
} vsite;

/* One run of fed_sim_run, shared by its steps: set up, sites stepped, torn down. */
typedef struct sim_run {
    const fed_sim_config *cfg;
    fed_sim_result *res;
    size_t n;                /* sites */
    int width;               /* digits of a site's number in its name */
    const fed_partition *pp; /* the partition used: cfg's or part */
    fed_partition *part;     /* the one made here when cfg has none */
    vsite *vs;               /* (n) the virtual sites */
    bool *bad;               /* (n) the malicious sites */
    char (*bad_names)[64];   /* (nbad) their names, for the metrics' malicious_accepted */
    size_t nbad;
    fed_sim_trigger trigger; /* the backdoor's (attack backdoor) */
    fed_dataset *bd_test;    /* the triggered test set of backdoor_success, or NULL */
    pool q;                  /* the training workers */
    coord_thread ct;         /* the coordinator and its thread */
    bool coord_started;      /* ct.th runs */
    bool mu_init;            /* q.mu and q.cv are initialised */
    void *zctx;              /* the ZeroMQ context everyone shares */
    fed_base_cache *bases;   /* the frozen bases the sites hold, in memory once for all */
    char certdir[64];        /* the temporary certificate folder ("" without one) */
    const char *certs;       /* the certificates' folder: cfg's cert_dir or certdir */
    char endpoint[96];       /* the coordinator's inproc endpoint */
    char ca[3100];           /* the federation's CA certificate under certs */
    fed_net_config net;      /* the channel settings of the coordinator and the sites */
} sim_run;

/* The endpoint, the certificates (with TLS), the descriptors and the ZeroMQ context. */
static fed_err open_context(sim_run *r) {
    static atomic_uint counter;
    snprintf(r->endpoint, sizeof r->endpoint, "inproc://fedsim-%ld-%u", (long)getpid(),
             atomic_fetch_add(&counter, 1));
    fed_err err;
    r->certs = r->cfg->cert_dir ? r->cfg->cert_dir : r->certdir;
    if (r->cfg->tls && !r->cfg->cert_dir) {
        snprintf(r->certdir, sizeof r->certdir, "/tmp/fedsim-certs-XXXXXX");
        if (!mkdtemp(r->certdir)) {
            r->certdir[0] = '\0';
            return fed_errorf(FED_EIO, "tls: cannot make a temporary folder");
        }
        if ((err = fed_sim_make_certs(r->cfg, r->n, r->certdir))) return err;
    }
    if ((err = reserve_fds(r->n))) return err;
    if ((err = fed_base_cache_new(&r->bases, NULL))) return err;
    if (!(r->zctx = fed_net_context_new())) return FED_ENOMEM;
    return fed_net_context_set_max_sockets(r->zctx, r->n + 64);
}

/* The coordinator's tally: is cn a malicious site? (Read-only once the sites are made.) */
static bool is_malicious(void *user, const char *cn) {
    const sim_run *r = user;
    for (size_t i = 0; i < r->nbad; i++)
        if (strcmp(r->bad_names[i], cn) == 0) return true;
    return false;
}

/* The coordinator's metric with a backdoor: the new model's accuracy on the triggered test
 * set, the share of its examples classified as the target label. */
static double backdoor_success(void *user, fed_model *m) {
    const sim_run *r = user;
    double loss, acc;
    return fed_evaluate_ce(m, r->bd_test, 0, &loss, &acc) == FED_OK ? acc : (double)NAN;
}

/* The backdoor's trigger, and with a central test set its triggered copy and the
 * coordinator's metric "backdoor_success" over it. */
static fed_err setup_backdoor(sim_run *r, fed_coord_config *cc) {
    const fed_sim_config *cfg = r->cfg;
    if (cfg->attack.kind != FED_ATTACK_BACKDOOR)
        return FED_OK; /* also with no attacker: the base rate */
    fed_err err = fed_sim_trigger_make(&r->trigger, cfg->train);
    if (err || !cfg->coord.eval_data || cfg->role == FED_SIM_SITES) return err;
    if ((err = fed_sim_backdoor_testset(&r->bd_test, cfg->coord.eval_data, &r->trigger,
                                        (int32_t)cfg->attack.param)))
        return err;
    cc->metric = backdoor_success;
    cc->metric_user = r;
    cc->metric_key = "backdoor_success";
    return FED_OK;
}

/* The malicious sites (r->bad) and their names (r->bad_names). */
static fed_err pick_malicious(sim_run *r) {
    if (!(r->bad = fed_calloc(r->n, sizeof *r->bad))) return FED_ENOMEM;
    r->nbad = fed_sim_malicious(r->cfg, r->n, r->bad);
    if (r->nbad && !(r->bad_names = fed_calloc(r->nbad, sizeof *r->bad_names))) return FED_ENOMEM;
    for (size_t i = 0, k = 0; i < r->n; i++)
        if (r->bad[i]) site_name(r->bad_names[k++], r->cfg->site_names, i, r->width);
    return FED_OK;
}

/* Does this process host site i? */
static bool hosted(const fed_sim_config *cfg, size_t i) {
    if (cfg->role == FED_SIM_COORDINATOR) return false;
    return cfg->role != FED_SIM_SITES || i % cfg->host_stride == cfg->host_index;
}

/* The sites hosted here: their slice of the data and a connection each. */
static fed_err make_sites(sim_run *r) {
    const fed_sim_config *cfg = r->cfg;
    const fed_partition *pp = r->pp;
    const size_t n = r->n;
    size_t most = 1, *idx = NULL;
    fed_err err = FED_OK;
    for (size_t i = 0; i < n; i++)
        if (pp->offsets[i + 1] - pp->offsets[i] > most) most = pp->offsets[i + 1] - pp->offsets[i];
    if (!(r->vs = fed_calloc(n, sizeof *r->vs)) || !(idx = fed_mallocarray(most, sizeof *idx))) {
        err = FED_ENOMEM;
        goto done;
    }
    /* Scaling's default K: the sites a round samples (the coordinator's rule). */
    const double sampled = (double)sampled_per_round(cfg, n);
    const double z = cfg->attack.kind == FED_ATTACK_LIE && r->nbad
                         ? fed_sim_lie_z(cfg, n, r->nbad, NULL, NULL)
                         : 0.0;
    if (!isfinite(z)) {
        err = fed_errorf(FED_EINVAL,
                         "attack lie: the paper's Z is not defined for %g sites a round, %zu of "
                         "%zu malicious: give Z",
                         sampled, r->nbad, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!hosted(cfg, i)) {
            r->vs[i].done = true; /* another process's */
            continue;
        }
        r->res->hosted++;
        size_t a = pp->offsets[i], b = pp->offsets[i + 1];
        for (size_t j = a; j < b; j++) idx[j - a] = pp->index[j];
        fed_dataset *sub = NULL;
        if ((err = fed_data_subset(&sub, cfg->train, idx, b - a))) goto done;
        fed_site_attack atk = {0};
        if (r->bad[i]) {
            atk = cfg->attack;
            atk.seed = fed_mix64(cfg->seed ^ fed_mix64(0x61747461636bull + i));
            if (atk.kind == FED_ATTACK_SCALE && atk.param == 0.0) atk.param = sampled;
            if (atk.kind == FED_ATTACK_LIE) atk.param = z;
            if (atk.kind == FED_ATTACK_LABEL_FLIP) /* data poisoning: y -> C-1-y */
                for (size_t j = 0; j < sub->n; j++)
                    sub->y[j] = (int32_t)cfg->train->num_classes - 1 - sub->y[j];
            if (atk.kind == FED_ATTACK_BACKDOOR) { /* data poisoning: triggered copies */
                fed_dataset *poisoned = NULL;
                err = fed_sim_backdoor_poison(&poisoned, sub, &r->trigger, (int32_t)atk.param,
                                              atk.seed);
                fed_data_destroy(&sub);
                if (err) goto done;
                sub = poisoned;
            }
        }
        char name[64], scert[3300], skey[3300];
        site_name(name, cfg->site_names, i, r->width);
        snprintf(scert, sizeof scert, "%s/ca/sites/%s/%s.crt", r->certs, name, name);
        snprintf(skey, sizeof skey, "%s/ca/sites/%s/%s.key", r->certs, name, name);
        fed_site_config sc = fed_site_default_config();
        sc.coordinator = cfg->endpoint ? cfg->endpoint : r->endpoint;
        sc.server_name = FED_SIM_SERVER_NAME;
        sc.net = r->net;
        if (cfg->tls) {
            sc.net.tls.ca_file = r->ca;
            sc.net.tls.cert_file = scert;
            sc.net.tls.key_file = skey;
        } else {
            sc.identity = name;
        }
        sc.zmq_ctx = r->zctx;
        sc.dataset = sub;
        sc.testset = cfg->site_tests ? cfg->site_tests[i] : NULL;
        sc.test_split = cfg->client_test_split;
        sc.seed = cfg->seed + i;
        sc.no_codec = i < cfg->no_codec_sites;
        sc.standardize = false;
        sc.threads = 0;
        sc.external_training = true;
        sc.keep_model = cfg->keep_models;
        sc.backoff_initial_ms = 10;
        sc.backoff_max_ms = 100;
        sc.software = "fedtune sim";
        sc.base_cache = r->bases;
        sc.attack = atk;
        err = fed_site_new(&r->vs[i].s, &sc);
        fed_data_destroy(&sub);
        if (err) {
            err = fed_errprefix(err, "%s", name);
            goto done;
        }
    }
done:
    fed_free(idx);
    return err;
}

/* The pool's workers and the coordinator's thread. */
static fed_err start_threads(sim_run *r) {
    pool *q = &r->q;
    if (pthread_mutex_init(&q->mu, NULL) != 0 || pthread_cond_init(&q->cv, NULL) != 0)
        return fed_errorf(FED_EINTERNAL, "sim: cannot make the pool's lock");
    r->mu_init = true;
    q->cap = r->n;
    if (!(q->queue = fed_calloc(r->n, sizeof *q->queue)) ||
        !(q->sites = fed_calloc(r->n, sizeof *q->sites)) ||
        !(q->th = fed_calloc(r->cfg->workers, sizeof *q->th)))
        return FED_ENOMEM;
    for (size_t i = 0; i < r->n; i++) q->sites[i] = r->vs[i].s; /* NULL: not hosted */
    fed_err err = fed__sim_wake_new(&q->wake, r->n);
    if (err) return err;
    for (; q->nth < r->cfg->workers; q->nth++)
        if (pthread_create(&q->th[q->nth], NULL, worker_main, q) != 0)
            return fed_errorf(FED_EINTERNAL, "sim: cannot start worker %zu", q->nth);
    if (!r->ct.c) return FED_OK; /* sites only */
    if (pthread_create(&r->ct.th, NULL, coord_main, &r->ct) != 0)
        return fed_errorf(FED_EINTERNAL, "sim: cannot start the coordinator's thread");
    r->coord_started = true;
    return FED_OK;
}

/* Steps site i once: its channel, a finished job (handed on, or the site vanishes), a
 * straggler's delayed start, a new job (drawn to drop out or straggle). *busy is set when
 * a job moved; *remaining drops when the site is done. */
static fed_err step_site(sim_run *r, size_t i, bool *busy, size_t *remaining) {
    const fed_sim_config *cfg = r->cfg;
    vsite *v = &r->vs[i];
    fed_err err;
    if (v->done) return FED_OK;
    if (v->running) {
        if (!fed_site_job_done(v->s)) {
            bool fin = false;
            return fed_site_step(v->s, 0, &fin);
        }
        v->running = false;
        *busy = true;
        const float *d;
        size_t nd;
        uint64_t ex;
        if (cfg->on_update && fed_site_job_update(v->s, &d, &nd, &ex))
            cfg->on_update(cfg->on_update_user, i, fed_site_job_round(v->s), d, nd, ex, v->drop);
        if (v->drop) {
            r->res->dropped++;
            FED_LOG(FED_LOG_DEBUG, "sim: site %zu vanishes in round %" PRIu64, i,
                    fed_site_job_round(v->s));
            if ((err = fed_site_disconnect(v->s))) return err;
        } else {
            fed_site_job_finish(v->s);
        }
    }
    if (v->waiting) {
        bool fin = false; /* slow to train, not deaf: its channel keeps going */
        if ((err = fed_site_step(v->s, 0, &fin))) return err;
        if (fed_now_s() < v->start_at) return FED_OK;
        v->waiting = false;
        v->running = true;
        pool_push(&r->q, i);
        return FED_OK;
    }
    bool fin = false;
    if ((err = fed_site_step(v->s, 0, &fin))) return err;
    if (fin) {
        v->done = true;
        (*remaining)--;
        return FED_OK;
    }
    if (fed_site_job_ready(v->s)) {
        *busy = true;
        uint64_t rd = fed_site_job_round(v->s);
        fed_site_job_claim(v->s);
        /* A retried round draws afresh (tries 0 keeps the first draw). */
        v->tries = rd == v->round ? v->tries + 1 : 0;
        v->round = rd;
        v->drop = cfg->dropout > 0 && draw(cfg->seed, i, rd, 1 + 16 * v->tries) < cfg->dropout;
        if (cfg->stragglers > 0 && draw(cfg->seed, i, rd, 2) < cfg->stragglers) {
            r->res->straggled++;
            v->waiting = true;
            v->start_at = fed_now_s() + cfg->straggler_delay_s;
        } else {
            v->running = true;
            pool_push(&r->q, i);
        }
    }
    return FED_OK;
}

/* After the coordinator ended: the final Byes are on their way to the connected sites
 * (inproc: within microseconds); a site between sessions (a dropout reconnecting) gets
 * none and is not waited for, nor one whose session began after the end. */
static void settle_sites(sim_run *r, size_t *remaining) {
    for (size_t i = 0; i < r->n; i++) {
        vsite *v = &r->vs[i];
        if (!v->done && !v->running && !v->waiting && !fed_site_connected(v->s)) {
            v->done = true;
            (*remaining)--;
        }
    }
}

/* SITES with connect_timeout_s: fails when a site here has not been connected by then (a
 * coordinator it cannot reach would be waited for for ever); looks once a second until
 * every one has been. A site is asked only before its first job. */
static fed_err check_reached(sim_run *r, double t0, double *next) {
    double now = fed_now_s(), limit = r->cfg->connect_timeout_s;
    if (limit <= 0 || now < *next) return FED_OK;
    *next = now + 1.0;
    for (size_t i = 0; i < r->n; i++) {
        vsite *v = &r->vs[i];
        if (!v->s || v->reached || (v->reached = fed_site_connected(v->s))) continue;
        if (now - t0 < limit) return FED_OK;
        char name[64];
        site_name(name, r->cfg->site_names, i, r->width);
        return fed_errorf(FED_EIO, "%s could not reach the coordinator at %s in %g s", name,
                          r->cfg->endpoint, limit);
    }
    *next = (double)INFINITY; /* all have been */
    return FED_OK;
}

/* Has the coordinator ended: this process's thread, or (SITES) the other process's? */
static bool coord_ended(const sim_run *r) {
    if (r->ct.c) return atomic_load(&r->ct.done);
    return r->cfg->coord_ended && r->cfg->coord_ended(r->cfg->dist_user);
}

/* The sites' machines, stepped until every site is done or the coordinator has ended:
 * in each sweep the sites that are due (sim/wake.h), waiting for one when the last
 * sweep moved nothing. With the coordinator alone (no sites here), until it ends. */
static fed_err run_sites(sim_run *r) {
    size_t remaining = r->res->hosted;
    double coord_end = 0.0, t0 = fed_now_s(), next_check = t0;
    bool busy = true, alone = r->cfg->role == FED_SIM_COORDINATOR;
    fed_err err;
    while (remaining > 0 || (alone && !atomic_load(&r->ct.done))) {
        const size_t *due;
        size_t m = fed__sim_wake_next(r->q.wake, busy ? 0 : 20, &due);
        busy = false;
        for (size_t j = 0; j < m; j++) {
            size_t i = due[j];
            vsite *v = &r->vs[i];
            if (v->done) continue;
            if ((err = step_site(r, i, &busy, &remaining))) return err;
            if (!v->done)
                fed__sim_wake_after(r->q.wake, i, v->s, v->waiting || fed_site_busy(v->s));
        }
        if (r->q.err) return fed_errorf(r->q.err, "sim: a worker could not start");
        if ((err = check_reached(r, t0, &next_check))) return err;
        if (coord_ended(r)) {
            if (r->ct.err || alone) break;
            settle_sites(r, &remaining);
            if (coord_end == 0.0) coord_end = fed_now_s();
            if (fed_now_s() - coord_end > 0.2) break;
        }
        if (!busy && m > 0) sleep_us(200); /* due sites that could not move yet */
    }
    return FED_OK;
}

/* Stops the threads, takes the results, frees everything; returns err, or the
 * coordinator's failure, which is the cause of whatever the sites then saw. */
static fed_err close_run(sim_run *r, fed_err err, fed_model **final) {
    fed_sim_result *res = r->res;
    pool *q = &r->q;
    if (r->coord_started) {
        atomic_store(&r->ct.stop, true);
        pthread_join(r->ct.th, NULL);
        if (r->ct.err) err = fed_errorf(r->ct.err, "coordinator: %s", r->ct.errmsg);
    }
    if (r->mu_init) {
        pthread_mutex_lock(&q->mu);
        q->quit = true;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
    /* A worker may still be training a site whose job is abandoned: wait for them all
     * before the sites go. */
    for (size_t i = 0; i < q->nth; i++) pthread_join(q->th[i], NULL);
    /* Tearing down records details of its own (a Bye to a site already gone): keep the
     * error's. */
    char detail[512] = "";
    if (err) snprintf(detail, sizeof detail, "%s", fed_errdetail(err));
    if (r->ct.c) {
        res->rounds = fed_coord_rounds_done(r->ct.c);
        res->last = fed_coord_last_round(r->ct.c);
        fed_coord_model_sha256(r->ct.c, res->sha256);
        fed_net_stats st;
        fed_coord_server_stats(r->ct.c, &st);
        res->bytes = st.bytes_received + st.bytes_sent;
        if (!err && final) err = fed_model_clone(final, fed_coord_model(r->ct.c));
    }
    if (r->vs)
        for (size_t i = 0; i < r->n; i++) {
            if (r->vs[i].running && !fed_site_job_done(r->vs[i].s)) continue; /* cannot happen */
            if (r->vs[i].s) {
                fed_site_stats st;
                fed_site_stats_get(r->vs[i].s, &st);
                res->site_bytes += st.model_bytes + st.update_bytes;
            }
            fed_site_destroy(&r->vs[i].s);
        }
    fed_coord_destroy(&r->ct.c);
    fed_net_context_destroy(&r->zctx);
    fed_base_cache_destroy(&r->bases);
    if (r->mu_init) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
    }
    fed_free(q->queue);
    fed_free(q->sites);
    fed__sim_wake_destroy(&q->wake);
    fed_free(q->th);
    fed_free(r->vs);
    fed_free(r->bad);
    fed_free(r->bad_names);
    fed_data_destroy(&r->bd_test);
    fed_partition_destroy(&r->part);
    if (r->certdir[0]) {
        if (fed_sim_remove_tree(r->certdir) != 0)
            FED_LOG(FED_LOG_WARN, "sim: could not remove %s", r->certdir);
    }
    if (err && detail[0]) fed_errorf(err, "%s", detail);
    return err;
}

fed_err fed_sim_run(const fed_sim_config *cfg, fed_model **final, fed_sim_result *res) {
    memset(res, 0, sizeof *res);
    if (final) *final = NULL;
    fed_err err = check(cfg);
    if (err) return err;
    double t0 = fed_now_s();
    sim_run run;
    memset(&run, 0, sizeof run);
    sim_run *r = &run;
    r->cfg = cfg;
    r->res = res;
    const size_t n = r->n = cfg->partition ? cfg->partition->clients : cfg->part.clients;
    r->width = name_width(n);

    r->pp = cfg->partition;
    if (!r->pp) {
        fed_part_config pc = cfg->part;
        pc.seed = cfg->seed;
        if ((err = fed_partition_make(&r->part, cfg->train->y, cfg->train->n,
                                      cfg->train->num_classes, &pc)))
            goto done;
        r->pp = r->part;
    }
    if ((err = open_context(r))) goto done;

    /* The coordinator. */
    char ccert[3200], ckey[3200];
    snprintf(r->ca, sizeof r->ca, "%s/ca/ca.crt", r->certs);
    snprintf(ccert, sizeof ccert, "%s/ca/coordinator/%s.crt", r->certs, FED_SIM_SERVER_NAME);
    snprintf(ckey, sizeof ckey, "%s/ca/coordinator/%s.key", r->certs, FED_SIM_SERVER_NAME);
    fed_coord_config cc = cfg->coord;
    cc.server = fed_server_default_config();
    cc.server.endpoint = cfg->role == FED_SIM_COORDINATOR ? cfg->endpoint : r->endpoint;
    cc.server.software = "fedtune sim";
    cc.server.max_peers = n + 16;
    cc.server.max_handshakes = n + 16;
    fed_net_config net = fed_net_default_config();
    net.plaintext = !cfg->tls;
    net.keepalive_ms = 0; /* one machine or a cluster's LAN: nothing goes silent */
    net.idle_timeout_ms = 0;
    net.zmq_heartbeat_ms = 0;
    net.handshake_timeout_ms = 600000;
    if (cfg->tls) {
        net.tls.ca_file = r->ca;
        net.tls.cert_file = ccert;
        net.tls.key_file = ckey;
    }
    /* A channel keeps the chunk buffers it used for its next transfer (net/pool.h): right
     * for the coordinator, but the sites live all run long, and a buffer kept a site that
     * was ever sampled is 1 MiB each (up to 8 with a CNN update: 7 GB over 1 000 sites).
     * So the sites free theirs as they come back and malloc reuses them among sites. */
    cc.server.net = net;
    net.pool_release = true;
    r->net = net;
    cc.zmq_ctx = r->zctx;
    cc.min_clients = n;
    if (cc.min_fit > n) cc.min_fit = n;
    cc.ordered_uploads = true;
    cc.wait_after_min_ms = -1; /* a round is its whole sample (or the deadline) */
    cc.seed = cfg->seed;
    if (cc.eval_threads == 0) cc.eval_threads = cfg->workers; /* idle while it evaluates */
    if ((err = pick_malicious(r))) goto done;
    if (r->nbad) {
        cc.tally = is_malicious;
        cc.tally_user = r;
        cc.tally_key = "malicious_accepted";
    }
    if ((err = setup_backdoor(r, &cc))) goto done;
    if (cfg->role != FED_SIM_SITES && (err = fed_coord_new(&r->ct.c, &cc))) goto done;
    if (cfg->role == FED_SIM_COORDINATOR && cfg->on_listen &&
        (err = cfg->on_listen(cfg->dist_user, fed_coord_endpoint(r->ct.c))))
        goto done;

    if ((err = make_sites(r))) goto done;
    if ((err = start_threads(r))) goto done;
    res->setup_seconds = fed_now_s() - t0;
    double t1 = fed_now_s();
    if ((err = run_sites(r))) goto done;
    res->seconds = fed_now_s() - t1;
done:
    return close_run(r, err, final);
}
