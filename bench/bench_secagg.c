/* bench_secagg: what secure aggregation (privacy/secagg.h) costs per round, against plain
 * FedAvg aggregation measured in the same run.
 *
 * For each number of clients n and each neighbour degree (the default min(n - 1, 30) and
 * all pairs), whole rounds of the protocol run in memory on one thread: the n client
 * objects and the server object exchange their real messages (no network, no TLS, no
 * signatures: sig_len 0, no verifier), each client masking its own random update of
 * --params floats in [-0.1, 0.1]. Every client and server call is timed with the thread's
 * CPU clock. A second round of each configuration has a fraction of the clients drop out
 * after SHARES, before MASKED, so the server rebuilds their mask keys from shares and
 * removes their pairwise masks (the recovery cost). The reference is plain FedAvg on the
 * coordinator: the same survivors' updates folded through coordinator/aggregate.h as the
 * coordinator does (fed_agg_begin_round, slot_open, slot_buffer, commit_buffer, result;
 * the buffer is filled untimed, as the transport would write it). Bytes are the lengths
 * of the protocol's messages; plain FedAvg sends the float32 delta, 4 x len bytes.
 *
 * Every secagg round's decoded sum is checked against the float sum of the survivors'
 * inputs (within one rounding step 2c/q per survivor) and every plain mean against the
 * same sum; the program aborts on a mismatch rather than print the timing of a wrong
 * computation. Figures are medians of --repeats rounds; the machines are shared, so read
 * the ratios, which pair a secagg round with the plain round run right after it. */
#include "bench/benchlib.h"
#include "coordinator/aggregate.h"
#include "core/alloc.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/rng.h"
#include "privacy/secagg.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEED        20261126u
#define MAX_REPEATS 51
#define MAX_LIST    16 /* entries of --clients and --degree */
#define INPUT_RANGE 0.1

/* ---- options: one table drives defaults, parsing, validation and --help ------------ */

typedef struct options {
    const char *clients; /* list of participant counts, "10 50 100" */
    const char *degree;  /* list of degrees: "default", "all" or a number */
    double params;       /* values per update */
    double drop;         /* fraction of clients dropping after SHARES (0: no such rows) */
    double repeats;      /* rounds per configuration; medians reported */
    bool quick;          /* n = 10, 100k values */
    bool help;           /* print usage and exit */
} options;

static const bench_opt opt_table[] = {
    {"--clients", BENCH_STRING, offsetof(options, clients), 0, 0, "\"N ...\"",
     "participants per round [10 50 100]"},
    {"--degree", BENCH_STRING, offsetof(options, degree), 0, 0, "\"D ...\"",
     "neighbours: default (min(n-1, 30)), all, or a number [default all]"},
    {"--params", BENCH_INTEGER, offsetof(options, params), 1, FED_SA_LEN_MAX, "P",
     "values per update"},
    {"--drop", BENCH_NUMBER, offsetof(options, drop), 0, 0.5, "F",
     "fraction of clients that drop after SHARES (0: skip those rows)"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "R",
     "rounds per configuration (median reported)"},
    {"--quick", BENCH_FLAG, offsetof(options, quick), 0, 0, NULL,
     "smoke run: 10 clients, 100 000 values"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "print this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

static options default_options(void) {
    options o = {.clients = "10 50 100",
                 .degree = "default all",
                 .params = 1000000,
                 .drop = 0.1,
                 .repeats = 3};
    return o;
}

static bool parse_args(options *o, int argc, char **argv) {
    *o = default_options();
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) { /* first, so explicit options override it */
            o->clients = "10";
            o->params = 100000;
        }
    return bench_parse("bench_secagg", opt_table, NUM_OPTS, o, argc, argv);
}

/* Splits a list of integers in lo..hi (and, when words, "default" -> 0 and "all" ->
 * UINT32_MAX) separated by spaces or commas into out[0..*count). */
static bool parse_list(const char *name, const char *s, uint32_t lo, uint32_t hi, bool words,
                       uint32_t *out, size_t *count) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *count = 0;
    for (char *tok = strtok(buf, " ,"); tok; tok = strtok(NULL, " ,")) {
        char *end;
        unsigned long v = strtoul(tok, &end, 10);
        bool ok = end != tok && *end == '\0' && v >= lo && v <= hi;
        if (words && strcmp(tok, "default") == 0) v = 0, ok = true;
        if (words && strcmp(tok, "all") == 0) v = UINT32_MAX, ok = true;
        if (!ok || *count == MAX_LIST) {
            fprintf(stderr, "bench_secagg: %s \"%s\": need up to %d of %u..%u%s\n", name, tok,
                    MAX_LIST, (unsigned)lo, (unsigned)hi, words ? ", default or all" : "");
            return false;
        }
        out[(*count)++] = (uint32_t)v;
    }
    if (*count == 0) fprintf(stderr, "bench_secagg: %s: empty list\n", name);
    return *count > 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* err = call, adding the CPU seconds it took to acc. */
#define TIMED(acc, call)                                                                           \
    do {                                                                                           \
        double t0_ = cpu_now();                                                                    \
        err = (call);                                                                              \
        (acc) += cpu_now() - t0_;                                                                  \
    } while (0)

static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1.0;
    double l;
    if (fscanf(f, "%lf", &l) != 1) l = -1.0;
    fclose(f);
    return l;
}

/* Client u's update in round rep: uniform in [-0.1, 0.1). */
static void fill_input(float *x, size_t len, size_t rep, uint32_t u) {
    fed_rng r = fed_rng_stream(SEED, (uint64_t)rep * FED_SA_CLIENTS_MAX + u);
    for (size_t i = 0; i < len; i++)
        x[i] = (float)INPUT_RANGE * (2.0f * fed_rng_uniform(&r) - 1.0f);
}

/* |got[i] * scale - ref[i]| <= tol for every i, else says where on stderr. */
static bool sum_ok(const char *what, const float *got, double scale, const double *ref, size_t len,
                   double tol) {
    for (size_t i = 0; i < len; i++) {
        double d = fabs((double)got[i] * scale - ref[i]);
        if (!(d <= tol)) {
            fprintf(stderr,
                    "bench_secagg: WRONG %s: value %zu is %.9g, the float sum %.9g "
                    "(off by %.3g, bound %.3g)\n",
                    what, i, (double)got[i] * scale, ref[i], d, tol);
            return false;
        }
    }
    return true;
}

/* ---- one secagg round and one plain round ----------------------------------------------- */

typedef struct client_cost {
    double keys, mask, unmask; /* CPU s: new + advertise + share; mask; unmask */
    size_t sent, recv;         /* message bytes */
} client_cost;

typedef struct round_ws {
    fed_sa_client **c; /* (n) the clients */
    client_cost *cc;   /* (n) their costs */
    float *x;          /* (len) one client's update at a time */
    float *sum;        /* (len) the decoded sum */
    double *ref;       /* (len) float sum of the survivors' updates, in double */
} round_ws;

/* One whole round; clients with drop[u] stop after SHARES. srv[0..3) gets the server's CPU
 * seconds for phases 1-2 (new, keys, shares), 3 (masked inputs), 4 (unmask, finalize). */
static fed_err secagg_round(const fed_sa_params *p, const bool *drop, size_t rep, round_ws *w,
                            double srv[3], size_t *survivors) {
    const uint32_t n = p->n;
    fed_sa_server *s = NULL;
    uint8_t *m = NULL, *r = NULL;
    size_t ml = 0, rl = 0;
    fed_err err;
    memset(w->cc, 0, n * sizeof *w->cc);
    memset(w->ref, 0, p->len * sizeof *w->ref);
    TIMED(srv[0], fed_sa_server_new(&s, p));
    for (uint32_t u = 0; !err && u < n; u++) {
        TIMED(w->cc[u].keys, fed_sa_client_new(&w->c[u], p, u));
        if (!err) TIMED(w->cc[u].keys, fed_sa_client_advertise(w->c[u], NULL, 0, &m, &ml));
        w->cc[u].sent += ml;
        if (!err) TIMED(srv[0], fed_sa_server_add_keys(s, u, m, ml, NULL, NULL));
        fed_free(m), m = NULL, ml = 0;
    }
    for (uint32_t u = 0; !err && u < n; u++) {
        TIMED(srv[0], fed_sa_server_keys_for(s, u, &m, &ml));
        w->cc[u].recv += ml;
        if (!err) TIMED(w->cc[u].keys, fed_sa_client_share(w->c[u], m, ml, NULL, NULL, &r, &rl));
        w->cc[u].sent += rl;
        if (!err) TIMED(srv[0], fed_sa_server_add_shares(s, u, r, rl));
        fed_free(m), fed_free(r), m = r = NULL, ml = rl = 0;
    }
    for (uint32_t u = 0; !err && u < n; u++) {
        TIMED(srv[0], fed_sa_server_shares_for(s, u, &m, &ml));
        if (!err && !drop[u]) { /* a dropped client never answers the DELIVERY */
            w->cc[u].recv += ml;
            fill_input(w->x, p->len, rep, u);
            for (size_t i = 0; i < p->len; i++) w->ref[i] += (double)w->x[i];
            TIMED(w->cc[u].mask, fed_sa_client_mask(w->c[u], m, ml, w->x, p->len, NULL, &r, &rl));
            w->cc[u].sent += rl;
            if (!err) TIMED(srv[1], fed_sa_server_add_masked(s, u, r, rl));
        }
        fed_free(m), fed_free(r), m = r = NULL, ml = rl = 0;
    }
    for (uint32_t u = 0; !err && u < n; u++) {
        if (drop[u]) continue;
        TIMED(srv[2], fed_sa_server_unmask_for(s, u, &m, &ml));
        w->cc[u].recv += ml;
        if (!err) TIMED(w->cc[u].unmask, fed_sa_client_unmask(w->c[u], m, ml, &r, &rl));
        w->cc[u].sent += rl;
        if (!err) TIMED(srv[2], fed_sa_server_add_unmask(s, u, r, rl));
        fed_free(m), fed_free(r), m = r = NULL, ml = rl = 0;
    }
    if (!err) TIMED(srv[2], fed_sa_server_finalize(s, w->sum, NULL, p->len, survivors));
    for (uint32_t u = 0; u < n; u++) fed_sa_client_destroy(&w->c[u]);
    fed_sa_server_destroy(&s);
    return err;
}

/* Plain FedAvg of the same round's survivors, as the coordinator folds uploads: each
 * update is written into its slot's buffer (untimed: the transport does it) and
 * committed; then the mean. Weight 1, so mean x count is the sum. *cpu = CPU seconds. */
static fed_err plain_round(fed_agg *agg, const fed_sa_params *p, const bool *drop, size_t rep,
                           const float **mean, size_t *count, double *cpu) {
    fed_err err = FED_OK;
    double t0 = cpu_now();
    fed_agg_begin_round(agg);
    *cpu = cpu_now() - t0;
    *count = 0;
    for (uint32_t u = 0; !err && u < p->n; u++) {
        if (drop[u]) continue;
        fed_agg_slot slot;
        float *buf = NULL;
        TIMED(*cpu, fed_agg_slot_open(agg, &slot, 1.0f));
        if (!err) TIMED(*cpu, fed_agg_slot_buffer(agg, slot, &buf));
        if (!err) fill_input(buf, p->len, rep, u);
        if (!err) TIMED(*cpu, fed_agg_slot_commit_buffer(agg, slot, 0.0));
        ++*count;
    }
    if (!err) TIMED(*cpu, fed_agg_result(agg, mean));
    return err;
}

/* ---- one configuration -------------------------------------------------------------------- */

/* Per-round figures, one row of v[][] per repeat in run_config. */
enum {
    C_KEYS,
    C_MASK,
    C_UNMASK,
    C_ALL,
    C_SENT,
    C_RECV,
    S_KEYS,
    S_MASKED,
    S_UNMASK,
    S_ALL,
    PLAIN,
    COORD_RATIO,
    CLIENT_RATIO,
    NUM_FIGS
};

/* The median over the surviving clients of figure `what` (C_KEYS..C_RECV). */
static double client_median(const client_cost *cc, const bool *drop, uint32_t n, double *tmp,
                            int what) {
    size_t k = 0;
    for (uint32_t u = 0; u < n; u++) {
        if (drop[u]) continue;
        const client_cost *c = &cc[u];
        double all = c->keys + c->mask + c->unmask;
        tmp[k++] = what == C_KEYS     ? c->keys
                   : what == C_MASK   ? c->mask
                   : what == C_UNMASK ? c->unmask
                   : what == C_ALL    ? all
                   : what == C_SENT   ? (double)c->sent
                                      : (double)c->recv;
    }
    return bench_median(tmp, k);
}

/* Runs R rounds of one configuration, each secagg round followed by the plain round of
 * the same survivors, checks both results, and puts the medians over rounds in med. */
static bool run_config(const fed_sa_params *p, const bool *drop, size_t R, round_ws *w,
                       fed_agg *agg, double med[NUM_FIGS]) {
    double v[NUM_FIGS][MAX_REPEATS], tmp[FED_SA_CLIENTS_MAX];
    const double step = 2.0 * p->clip_range / p->quant_range;
    for (size_t rep = 0; rep < R; rep++) {
        fed_sa_params pr = *p;
        pr.round = rep;
        double srv[3] = {0, 0, 0}, plain = 0;
        size_t survivors = 0, count = 0;
        const float *mean = NULL;
        fed_err err = secagg_round(&pr, drop, rep, w, srv, &survivors);
        if (err) {
            fprintf(stderr, "bench_secagg: secagg round: %s\n", fed_errdetail(err));
            return false;
        }
        /* One rounding step per survivor, plus the float rounding of the decoded value. */
        if (!sum_ok("secagg sum", w->sum, 1.0, w->ref, p->len,
                    (double)survivors * step +
                        (double)FLT_EPSILON * (double)survivors * INPUT_RANGE))
            return false;
        if ((err = plain_round(agg, &pr, drop, rep, &mean, &count, &plain))) {
            fprintf(stderr, "bench_secagg: plain round: %s\n", fed_errdetail(err));
            return false;
        }
        /* A float sum of count terms, each partial sum below count x 0.1, then a scaling. */
        if (count != survivors ||
            !sum_ok("plain mean", mean, (double)count, w->ref, p->len,
                    (double)(count + 2) * (double)FLT_EPSILON * (double)count * INPUT_RANGE))
            return false;
        for (int k = C_KEYS; k <= C_RECV; k++) v[k][rep] = client_median(w->cc, drop, p->n, tmp, k);
        v[S_KEYS][rep] = srv[0];
        v[S_MASKED][rep] = srv[1];
        v[S_UNMASK][rep] = srv[2];
        v[S_ALL][rep] = srv[0] + srv[1] + srv[2];
        v[PLAIN][rep] = plain;
        v[COORD_RATIO][rep] = v[S_ALL][rep] / plain;
        v[CLIENT_RATIO][rep] = v[C_ALL][rep] / plain;
    }
    for (int k = 0; k < NUM_FIGS; k++) med[k] = bench_median(v[k], R);
    return true;
}

/* ---- main ------------------------------------------------------------------------------ */

/* One configuration: the parameters, who drops, and the medians once it has run. */
typedef struct row {
    fed_sa_params p;      /* n, degree, threshold, len */
    uint32_t dropped;     /* clients that drop after SHARES */
    double med[NUM_FIGS]; /* medians over the repeats */
} row;

static void usage(FILE *f) {
    options d = default_options();
    bench_usage(f, "bench_secagg",
                "Secure aggregation (privacy/secagg.h) per round, in memory on one thread:\n"
                "client and coordinator CPU seconds and bytes per client, for each number of\n"
                "clients and neighbour degree, without and with clients dropping after SHARES,\n"
                "against plain FedAvg aggregation (coordinator/aggregate.h) in the same run.",
                opt_table, NUM_OPTS, &d);
}

static void print_cpu_row(const row *r) {
    const double *m = r->med, ms = 1e3;
    printf("%7u %6u %3u %4u | %11.2f %7.2f %7.3f %7.2f | %11.2f %7.2f %7.2f %7.2f | %7.2f | "
           "%7.1f %7.2f\n",
           (unsigned)r->p.n, (unsigned)fed_sa_degree(&r->p), (unsigned)r->p.threshold,
           (unsigned)r->dropped, ms * m[C_KEYS], ms * m[C_MASK], ms * m[C_UNMASK], ms * m[C_ALL],
           ms * m[S_KEYS], ms * m[S_MASKED], ms * m[S_UNMASK], ms * m[S_ALL], ms * m[PLAIN],
           m[COORD_RATIO], m[CLIENT_RATIO]);
    fflush(stdout);
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(&o, argc, argv)) return 2;
    if (o.help) {
        usage(stdout);
        return 0;
    }
    uint32_t ns[MAX_LIST], degs[MAX_LIST], nmax = 0;
    size_t num_n, num_d;
    if (!parse_list("--clients", o.clients, 2, FED_SA_CLIENTS_MAX, false, ns, &num_n) ||
        !parse_list("--degree", o.degree, 1, FED_SA_CLIENTS_MAX, true, degs, &num_d))
        return 2;
    for (size_t i = 0; i < num_n; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    const size_t len = (size_t)o.params, R = (size_t)o.repeats;

    /* The coordinator folds on its event-loop thread, and the thread CPU clock sees one. */
    fed_blas_set_threads(1);
    round_ws w = {fed_calloc(nmax, sizeof *w.c), fed_calloc(nmax, sizeof *w.cc),
                  fed_aligned_alloc(len, sizeof(float)), fed_aligned_alloc(len, sizeof(float)),
                  fed_calloc(len, sizeof(double))};
    bool *drop = fed_calloc(nmax, sizeof *drop);
    row *rows = fed_calloc(2 * MAX_LIST * MAX_LIST, sizeof *rows);
    fed_agg *agg = NULL;
    fed_err err = fed_agg_new(&agg, len, 1);
    if (!err && (!w.c || !w.cc || !w.x || !w.sum || !w.ref || !drop || !rows)) err = FED_ENOMEM;
    if (err) {
        fprintf(stderr, "bench_secagg: %s\n", fed_errdetail(err));
        return 1;
    }

    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", gmtime(&t));
    printf("fedtune bench_secagg, %s UTC; load average (1 min) at start: %.2f on %ld CPUs\n", date,
           load_average(), sysconf(_SC_NPROCESSORS_ONLN));
    printf("%zu values per update in [-0.1, 0.1], clip %g, quantization 2^22; medians of %zu "
           "rounds\nper configuration; thread CPU milliseconds per round; plain = FedAvg on the "
           "coordinator\n(coordinator/aggregate.h) of the same survivors' updates\n\n",
           len, FED_SA_DEFAULT_CLIP, R);
    printf("%7s %6s %3s %4s | %-35s | %-35s | %7s | %15s\n", "", "", "", "",
           "client CPU ms (median over clients)", "coordinator CPU ms", "plain", "secagg / plain");
    printf("%7s %6s %3s %4s | %11s %7s %7s %7s | %11s %7s %7s %7s | %7s | %7s %7s\n", "clients",
           "degree", "t", "drop", "keys+shares", "mask", "unmask", "total", "keys+shares", "masked",
           "unmask", "total", "coord", "coord", "client");
    size_t nrows = 0;
    for (size_t i = 0; i < num_n; i++) {
        uint32_t done[MAX_LIST], num_done = 0; /* actual degrees run for this n */
        for (size_t j = 0; j < num_d; j++) {
            fed_sa_params p;
            fed_sa_params_default(&p, ns[i], len);
            if (degs[j] != 0) p.degree = degs[j] < ns[i] - 1 ? degs[j] : ns[i] - 1;
            p.threshold = (fed_sa_degree(&p) + 1) / 2 + 1; /* the smallest valid threshold */
            for (int b = 0; b < 32; b++) p.graph_seed[b] = (uint8_t)(SEED + 7u * (unsigned)b);
            bool seen = false;
            for (uint32_t k = 0; k < num_done; k++) seen |= done[k] == fed_sa_degree(&p);
            if (seen) continue;
            done[num_done++] = fed_sa_degree(&p);
            if ((err = fed_sa_params_check(&p))) {
                fprintf(stderr, "bench_secagg: %s\n", fed_errdetail(err));
                return 2;
            }
            uint32_t ndrop = (uint32_t)lround(o.drop * ns[i]);
            for (int d = 0; d < 2; d++) {
                if (d == 1 && ndrop == 0) continue;
                row *r = &rows[nrows++];
                r->p = p;
                r->dropped = d ? ndrop : 0;
                memset(drop, 0, ns[i] * sizeof *drop);
                for (uint32_t k = 0; k < r->dropped; k++) /* spread over the ids */
                    drop[(2 * k + 1) * ns[i] / (2 * r->dropped)] = true;
                /* One untimed round first: the allocator and page tables settle (the server's
                 * 4 x len sum is reused from the heap from then on, as in a long run). */
                if (nrows == 1 && !run_config(&p, drop, 1, &w, agg, r->med)) return 1;
                if (!run_config(&p, drop, R, &w, agg, r->med)) return 1;
                print_cpu_row(r);
            }
        }
    }

    printf("\nbytes per client and round (median over the clients that finish), from the\n"
           "message lengths; plain FedAvg sends the float32 delta, 4 x %zu bytes. Both also\n"
           "receive the global model, not counted.\n\n",
           len);
    printf("%7s %6s %4s | %12s %12s %12s | %14s\n", "clients", "degree", "drop", "secagg sent",
           "plain sent", "secagg recv", "sent / plain");
    for (size_t k = 0; k < nrows; k++) {
        const row *r = &rows[k];
        printf("%7u %6u %4u | %12.0f %12zu %12.0f | %14.5f\n", (unsigned)r->p.n,
               (unsigned)fed_sa_degree(&r->p), (unsigned)r->dropped, r->med[C_SENT], 4 * len,
               r->med[C_RECV], r->med[C_SENT] / (4.0 * (double)len));
    }
    printf("\nevery secagg sum checked against the float sum of the survivors' updates (within\n"
           "one step 2c/q per survivor), every plain mean against the same sum.\n"
           "load average (1 min) at end: %.2f\n",
           load_average());
    for (uint32_t u = 0; u < nmax; u++) fed_sa_client_destroy(&w.c[u]);
    fed_free(w.c);
    fed_free(w.cc);
    fed_free(w.x);
    fed_free(w.sum);
    fed_free(w.ref);
    fed_free(drop);
    fed_free(rows);
    fed_agg_destroy(&agg);
    return 0;
}
