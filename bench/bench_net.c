/* bench_net: what the secure channel costs, against references measured in the same run.
 *
 *   1. AES-128-GCM through OpenSSL EVP on 16 KiB blocks (what TLS records cost here).
 *   2. One 256 MiB transfer coordinator -> client over tcp loopback through the TLS
 *      channel (net/channel.h: credits, pooled zero-copy frames, SHA-256 verified at the
 *      receiver), timed from send_transfer to the receiver's confirmation.
 *   3. The same bytes over plain ZeroMQ, ROUTER -> DEALER in 1 MiB frames (the channel's
 *      chunking), copied into the receiver's buffer, timed to the receiver's ack; and
 *      again with the receiver checking SHA-256 as the channel does, which tells the cost
 *      of TLS apart from the cost of the digest.
 *   4. A broadcast of the 256 MiB model to 1 and to 8 clients at once (client threads of
 *      one process, each with its own DEALER and TLS session): aggregate MB/s and the
 *      coordinator's peak RSS, which must not grow with the clients beyond the pool; and
 *      the same broadcast over plain ZeroMQ (each frame to every receiver in turn, each
 *      receiver copying into place), without and with the receivers checking SHA-256.
 *
 * The coordinator and the clients run in separate processes (forked), so each side has
 * its own core and the coordinator's peak RSS (VmHWM) is its own. CPU seconds per GB of
 * each side (all threads, getrusage) are printed too; on loopback the kernel charges TCP
 * work to whichever process its softirq interrupts, so read them as a rough split. The
 * client side's CPU is also split by thread (/proc/self/task): the receiving threads, the
 * channel's digest worker and ZeroMQ's I/O threads, with the rate the busiest kind would
 * allow with a core per thread; on a shared machine that bound is steadier than the wall
 * time, which depends on who else holds the cores.
 * Receive buffers are touched before timing: first-touch page faults are not what we
 * measure. This is the one program outside net/ that includes zmq.h and OpenSSL: the
 * references must not go through the code they judge. Run by hand:
 *
 *   build/bench/bench_net [--mb 256] [--runs 3] [--clients 8] [--only tls|plain|broadcast]
 *
 * Certificates are made with certs/fedtune-certs in a temporary folder. */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/channel.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define MB (1024.0 * 1024.0)

static size_t opt_bytes = (size_t)256 << 20;
static int opt_runs = 3;
static int opt_clients = 8;
static const char *opt_only = ""; /* "tls", "plain" or "broadcast": run only that part */
static char certdir[128];

static void die(const char *what) {
    fprintf(stderr, "bench_net: %s: %s\n", what, fed_errmsg());
    exit(1);
}

static void log_stderr(void *user, fed_log_level level, const char *line) {
    (void)user;
    fprintf(stderr, "[%s] %s\n", fed_log_level_name(level), line);
}

static const char *cpath(const char *rel) {
    static char bufs[8][320];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", certdir, rel);
    return b;
}

/* Peak resident set of this process, in MiB (VmHWM; getrusage as a fallback). */
static double peak_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return (double)kb / 1024.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fill(uint8_t *buf, size_t n) {
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
}

/* ------------------------------------------------------------------------------------ */
/* 1. AES-128-GCM                                                                       */

static double aes_gcm_mbs(void) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    static uint8_t in[16384], out[16384 + 16];
    uint8_t key[16] = {1}, iv[12] = {2}, tag[16];
    EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv);
    double t0 = fed_now_s(), t;
    size_t bytes = 0;
    do {
        for (int k = 0; k < 256; k++) {
            int n = 0, m = 0;
            iv[0]++;
            EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv);
            EVP_EncryptUpdate(ctx, out, &n, in, (int)sizeof in);
            EVP_EncryptFinal_ex(ctx, out + n, &m);
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
            bytes += sizeof in;
        }
        t = fed_now_s() - t0;
    } while (t < 1.0);
    EVP_CIPHER_CTX_free(ctx);
    return (double)bytes / MB / t;
}

/* ------------------------------------------------------------------------------------ */
/* Results travel from the forked processes to the parent through pipes                 */

typedef struct result {
    double best, median; /* MB/s (aggregate over the clients) */
    double rss_mib;      /* coordinator peak RSS */
    double coord_cpu;    /* coordinator CPU seconds (all threads) during the runs */
    double client_cpu;   /* client process CPU seconds (all threads) during the runs */
    double split[3];     /* the same by thread kind: receiving, digest worker, ZeroMQ I/O */
    size_t pool_max, pool_peak;
    double pool_buf_mib;
} result;

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Thread kinds of the client process, by name: the receiving threads (and the idle main
 * thread), the channel's digest worker ("fednet-hash", net/hasher.c) and ZeroMQ's I/O
 * threads ("ZMQbg/IO/..."). */
enum { KIND_RECV, KIND_HASH, KIND_ZMQ, KINDS };

/* The CPU seconds of every live thread of this process, summed by kind into out. */
static void thread_cpu(double out[KINDS]) {
    for (int k = 0; k < KINDS; k++) out[k] = 0;
    DIR *d = opendir("/proc/self/task");
    double hz = (double)sysconf(_SC_CLK_TCK);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], line[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = '\0';
        /* "tid (comm) state ppid ...": utime and stime are fields 14 and 15. */
        char *open = strchr(line, '('), *close = strrchr(line, ')');
        if (!open || !close || close < open) continue;
        unsigned long ut = 0, st = 0;
        if (sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            continue;
        *close = '\0';
        const char *comm = open + 1;
        int kind = strcmp(comm, "fednet-hash") == 0     ? KIND_HASH
                   : strncmp(comm, "ZMQbg/IO/", 9) == 0 ? KIND_ZMQ
                                                        : KIND_RECV;
        out[kind] += (double)(ut + st) / hz;
    }
    if (d) closedir(d);
}

static void put(int fd, const void *p, size_t n) {
    if (write(fd, p, n) != (ssize_t)n) _exit(3);
}

static void get(int fd, void *p, size_t n) {
    if (read(fd, p, n) != (ssize_t)n) memset(p, 0, n);
}

/* The client process's side of a measurement: from "all joined" (a byte on go) to "all
 * received" (every receiving thread at the done barrier, none ended yet), its CPU
 * seconds, all threads and by kind, written to res; then lets the threads end. */
static void client_cpu_report(int go, int res, pthread_barrier_t *done, pthread_barrier_t *rd) {
    char b;
    get(go, &b, 1);
    double cpu0 = cpu_seconds(), k0[KINDS], k1[KINDS], out[1 + KINDS];
    thread_cpu(k0);
    pthread_barrier_wait(done);
    out[0] = cpu_seconds() - cpu0;
    thread_cpu(k1);
    pthread_barrier_wait(rd);
    for (int k = 0; k < KINDS; k++) out[1 + k] = k1[k] - k0[k];
    put(res, out, sizeof out);
}

static void set_times(result *r, const double *secs, int runs, double mib) {
    qsort((void *)secs, (size_t)runs, sizeof secs[0], cmp_double);
    r->best = mib / secs[0];
    r->median = mib / secs[runs / 2];
}

/* ------------------------------------------------------------------------------------ */
/* The TLS channel: coordinator and clients                                             */

static fed_server_config bench_server_config(void) {
    fed_server_config c = fed_server_default_config();
    c.endpoint = "tcp://127.0.0.1:0";
    c.net.tls.ca_file = cpath("ca/ca.crt");
    c.net.tls.cert_file = cpath("ca/coordinator/localhost.crt");
    c.net.tls.key_file = cpath("ca/coordinator/localhost.key");
    c.net.tls.crl_file = cpath("ca/crl.pem");
    c.net.idle_timeout_ms = 0;
    return c;
}

typedef struct client_arg {
    char endpoint[256];       /* the coordinator */
    int index;                /* site-<index+1> */
    pthread_barrier_t *ready; /* all clients allocated their buffers */
    pthread_barrier_t *done;  /* all clients received everything (threads still alive) */
    pthread_barrier_t *read;  /* their CPU time was read: they may end */
} client_arg;

/* A client: receives every transfer a RoundStart announces, until Bye. */
static void *client_thread(void *p) {
    client_arg *a = p;
    void *zctx = fed_net_context_new();
    char crt[320], key[320], name[32];
    snprintf(name, sizeof name, "site-%d", a->index + 1);
    snprintf(crt, sizeof crt, "%s/ca/sites/%s/%s.crt", certdir, name, name);
    snprintf(key, sizeof key, "%s/ca/sites/%s/%s.key", certdir, name, name);
    fed_client_config cc = fed_client_default_config();
    cc.endpoint = a->endpoint;
    cc.server_name = "localhost";
    cc.net.tls.ca_file = cpath("ca/ca.crt");
    cc.net.tls.cert_file = crt;
    cc.net.tls.key_file = key;
    cc.net.idle_timeout_ms = 0;
    uint8_t *buf = fed_malloc(opt_bytes);
    if (!buf) die("client buffer");
    memset(buf, 0, opt_bytes); /* first touch outside the timing */
    pthread_barrier_wait(a->ready);
    fed_client *c = NULL;
    if (fed_client_new(&c, zctx, &cc) != FED_OK) die("client");
    for (bool done = false; !done;) {
        fed_net_event ev;
        if (fed_client_poll(c, 100, &ev) != FED_OK) die("client poll");
        if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_ROUND_START) {
            const fed_msg_round_start *r = &ev.msg->u.round_start;
            if (fed_client_recv_transfer(c, r->transfer_id, buf, r->manifest.total_bytes,
                                         r->manifest.sha256) != FED_OK)
                die("recv_transfer");
        } else if (ev.type == FED_NET_MESSAGE && ev.msg->type == FED_MSG_BYE) {
            done = true;
        } else if (ev.type == FED_NET_LEFT) {
            fprintf(stderr, "client %s left: %s\n", name, ev.reason);
            done = true;
        }
    }
    pthread_barrier_wait(a->done);
    pthread_barrier_wait(a->read);
    fed_client_destroy(&c);
    fed_free(buf);
    fed_net_context_destroy(&zctx);
    return NULL;
}

/* The client process: n threads against the endpoint read from fd; writes the CPU
 * seconds spent from "all joined" (a byte on go) to the end into res. */
static void client_process(int fd, int go, int res, int n) {
    char ep[256] = {0};
    if (read(fd, ep, sizeof ep - 1) <= 0) _exit(1);
    client_arg *args = calloc((size_t)n, sizeof *args);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    pthread_barrier_t ready, done, rd;
    pthread_barrier_init(&ready, NULL, (unsigned)n + 1);
    pthread_barrier_init(&done, NULL, (unsigned)n + 1);
    pthread_barrier_init(&rd, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        snprintf(args[i].endpoint, sizeof args[i].endpoint, "%s", ep);
        args[i].index = i;
        args[i].ready = &ready;
        args[i].done = &done;
        args[i].read = &rd;
        pthread_create(&th[i], NULL, client_thread, &args[i]);
    }
    pthread_barrier_wait(&ready);
    client_cpu_report(go, res, &done, &rd); /* go: the coordinator saw everyone join */
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    free(args);
    free(th);
    _exit(0);
}

static fed_msg round_start(uint64_t id, const uint8_t sha[32]) {
    static fed_msg_tensor t;
    t.name = "model";
    t.ndim = 1;
    t.shape[0] = opt_bytes / 4;
    t.dtype = FED_DTYPE_F32;
    t.trainable = true;
    fed_msg m = {.type = FED_MSG_ROUND_START};
    m.u.round_start.round = id;
    m.u.round_start.transfer_id = id;
    m.u.round_start.manifest.tensors = &t;
    m.u.round_start.manifest.num_tensors = 1;
    m.u.round_start.manifest.total_bytes = opt_bytes;
    memcpy(m.u.round_start.manifest.sha256, sha, 32);
    return m;
}

/* The coordinator process: waits for n clients, then `runs` times sends the model to all
 * of them at once, each run timed until every client confirmed its SHA-256. */
static void coordinator_process(int fd, int go, int res, int n, int runs) {
    fed_log_set_handler(log_stderr, NULL, FED_LOG_WARN);
    void *zctx = fed_net_context_new();
    fed_server_config sc = bench_server_config();
    fed_server *s = NULL;
    if (fed_server_new(&s, zctx, &sc) != FED_OK) die("server");
    uint8_t *model = fed_malloc(opt_bytes), sha[32];
    if (!model) die("model");
    fill(model, opt_bytes);
    fed_sha256(model, opt_bytes, sha);
    const char *ep = fed_server_endpoint(s);
    put(fd, ep, strlen(ep));
    close(fd);
    uint32_t peers[64];
    int joined = 0;
    fed_net_event ev;
    while (joined < n) {
        if (fed_server_poll(s, 1000, &ev) != FED_OK) die("poll");
        if (ev.type == FED_NET_JOINED) peers[joined++] = ev.peer;
    }
    put(go, "g", 1);
    double secs[16], cpu0 = cpu_seconds();
    for (int r = 0; r < runs; r++) {
        uint64_t id = (uint64_t)r + 1;
        fed_msg m = round_start(id, sha);
        double t0 = fed_now_s();
        for (int i = 0; i < n; i++) {
            if (fed_server_send(s, peers[i], &m) != FED_OK) die("send");
            if (fed_server_send_transfer(s, peers[i], id, model, opt_bytes) != FED_OK)
                die("send_transfer");
        }
        for (int sent = 0; sent < n;) {
            if (fed_server_poll(s, 1000, &ev) != FED_OK) die("poll");
            if (ev.type == FED_NET_TRANSFER_SENT) sent++;
            if (ev.type == FED_NET_LEFT) {
                fprintf(stderr, "peer left: %s\n", ev.reason);
                _exit(1);
            }
        }
        secs[r] = fed_now_s() - t0;
    }
    result out = {0};
    out.coord_cpu = cpu_seconds() - cpu0;
    fed_msg bye = {.type = FED_MSG_BYE};
    bye.u.bye.reason = "done";
    for (int i = 0; i < n; i++)
        if (fed_server_send(s, peers[i], &bye) != FED_OK) die("bye");
    for (int k = 0; k < 20; k++)
        if (fed_server_poll(s, 10, &ev) != FED_OK) break;
    fed_net_stats st;
    fed_server_stats(s, &st);
    set_times(&out, secs, runs, (double)opt_bytes * n / MB);
    out.rss_mib = peak_rss_mib();
    out.pool_max = st.pool_max;
    out.pool_peak = st.pool_peak;
    out.pool_buf_mib = (double)st.pool_buffer_bytes / MB;
    put(res, &out, sizeof out);
    fed_server_destroy(&s);
    fed_free(model);
    fed_net_context_destroy(&zctx);
    _exit(0);
}

/* Forks the client side and the coordinator side of one measurement and collects it. */
static result run_pair(void (*client)(int fd, int go, int res, int n),
                       void (*coord)(int fd, int go, int res, int n, int runs), int n, int runs) {
    int ep[2], go[2], cres[2], sres[2];
    if (pipe(ep) != 0 || pipe(go) != 0 || pipe(cres) != 0 || pipe(sres) != 0) die("pipe");
    fflush(stdout);
    pid_t cp = fork();
    if (cp == 0) client(ep[0], go[0], cres[1], n);
    pid_t sp = fork();
    if (sp == 0) coord(ep[1], go[1], sres[1], n, runs);
    close(ep[0]);
    close(ep[1]);
    close(go[0]);
    close(go[1]);
    close(cres[1]);
    close(sres[1]);
    result r;
    get(sres[0], &r, sizeof r);
    double cpu[1 + KINDS];
    get(cres[0], cpu, sizeof cpu);
    r.client_cpu = cpu[0];
    memcpy(r.split, cpu + 1, sizeof r.split);
    close(sres[0]);
    close(cres[0]);
    int st;
    waitpid(sp, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fprintf(stderr, "coordinator failed\n");
    waitpid(cp, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fprintf(stderr, "clients failed\n");
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* Plain ZeroMQ, same chunking                                                          */

static const size_t plain_chunk = 1 << 20;
static bool plain_sha; /* the plain receiver also checks SHA-256, as the channel does */

typedef struct plain_arg {
    char endpoint[256];       /* the coordinator's ROUTER */
    pthread_barrier_t *ready; /* all receivers connected and said hello */
    pthread_barrier_t *done;  /* all receivers received everything (threads still alive) */
    pthread_barrier_t *read;  /* their CPU time was read: they may end */
} plain_arg;

/* One plain receiver: `runs` times the whole buffer in frames, copied into place (and
 * hashed with plain_sha), acknowledged with the digest. */
static void *plain_thread(void *p) {
    plain_arg *a = p;
    void *ctx = zmq_ctx_new();
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(d, a->endpoint);
    uint8_t *buf = malloc(opt_bytes), sha[32];
    memset(buf, 0, opt_bytes);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    zmq_send(d, "hi", 2, 0);
    pthread_barrier_wait(a->ready);
    for (int r = 0; r < opt_runs; r++) {
        size_t got = 0;
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        while (got < opt_bytes) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, d, 0) < 0) _exit(1);
            size_t len = zmq_msg_size(&m);
            if (len > opt_bytes - got) len = opt_bytes - got;
            memcpy(buf + got, zmq_msg_data(&m), len);
            if (plain_sha) EVP_DigestUpdate(md, buf + got, len);
            got += len;
            zmq_msg_close(&m);
        }
        unsigned int hl;
        EVP_DigestFinal_ex(md, sha, &hl);
        zmq_send(d, sha, sizeof sha, 0);
    }
    pthread_barrier_wait(a->done);
    pthread_barrier_wait(a->read);
    EVP_MD_CTX_free(md);
    free(buf);
    zmq_close(d);
    zmq_ctx_term(ctx);
    return NULL;
}

/* The plain client process: n receivers, each a thread with its own ZeroMQ context (as
 * each channel client has its own socket), CPU seconds from "all joined" to the end. */
static void plain_client(int fd, int go, int res, int n) {
    plain_arg a = {0};
    if (read(fd, a.endpoint, sizeof a.endpoint - 1) <= 0) _exit(1);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    pthread_barrier_t ready, done, rd;
    pthread_barrier_init(&ready, NULL, (unsigned)n + 1);
    pthread_barrier_init(&done, NULL, (unsigned)n + 1);
    pthread_barrier_init(&rd, NULL, (unsigned)n + 1);
    a.ready = &ready;
    a.done = &done;
    a.read = &rd;
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, plain_thread, &a);
    pthread_barrier_wait(&ready);
    client_cpu_report(go, res, &done, &rd);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    free(th);
    _exit(0);
}

/* The plain coordinator: every frame goes to each receiver in turn (as the channel
 * interleaves its sessions' chunks), copied into ZeroMQ as the channel's frames are
 * written; with several receivers a small high-water mark and ROUTER_MANDATORY make a
 * send wait for the slowest instead of queueing n copies of the model. Each run is timed
 * until every receiver acknowledged. */
static void plain_coordinator(int fd, int go, int res, int n, int runs) {
    void *ctx = zmq_ctx_new();
    void *rt = zmq_socket(ctx, ZMQ_ROUTER);
    if (n > 1) {
        int hwm = 8, on = 1;
        zmq_setsockopt(rt, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(rt, ZMQ_ROUTER_MANDATORY, &on, sizeof on);
    }
    zmq_bind(rt, "tcp://127.0.0.1:0");
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(rt, ZMQ_LAST_ENDPOINT, ep, &len);
    put(fd, ep, strlen(ep));
    close(fd);
    uint8_t *model = malloc(opt_bytes);
    fill(model, opt_bytes);
    uint8_t rid[64][256], tmp[64];
    int rl[64];
    for (int i = 0; i < n; i++) {
        rl[i] = zmq_recv(rt, rid[i], sizeof rid[i], 0);
        zmq_recv(rt, tmp, sizeof tmp, 0);
    }
    put(go, "g", 1);
    double secs[16], cpu0 = cpu_seconds();
    for (int r = 0; r < runs; r++) {
        double t0 = fed_now_s();
        for (size_t off = 0; off < opt_bytes; off += plain_chunk) {
            size_t l = opt_bytes - off < plain_chunk ? opt_bytes - off : plain_chunk;
            for (int i = 0; i < n; i++) {
                zmq_send(rt, rid[i], (size_t)rl[i], ZMQ_SNDMORE);
                zmq_send(rt, model + off, l, 0);
            }
        }
        for (int i = 0; i < n; i++) {
            uint8_t who[256];
            zmq_recv(rt, who, sizeof who, 0);
            zmq_recv(rt, tmp, sizeof tmp, 0);
        }
        secs[r] = fed_now_s() - t0;
    }
    result out = {0};
    out.coord_cpu = cpu_seconds() - cpu0;
    set_times(&out, secs, runs, (double)opt_bytes * n / MB);
    out.rss_mib = peak_rss_mib();
    put(res, &out, sizeof out);
    free(model);
    zmq_close(rt);
    zmq_ctx_term(ctx);
    _exit(0);
}

/* One row; then the client CPU split by thread kind, and the aggregate rate the busiest
 * kind would allow if every client thread had a core of its own (each of the n clients
 * has one thread of each kind). */
static void print_row(const char *label, const result *r, int n) {
    double gb = (double)opt_bytes * n * opt_runs / 1e9;
    printf("%-30s %9.0f %9.0f %12.2f %12.2f\n", label, r->best, r->median, r->coord_cpu / gb,
           r->client_cpu / gb);
    double worst = 0;
    for (int k = 0; k < KINDS; k++)
        if (r->split[k] > worst) worst = r->split[k];
    printf("%-30s client s/GB: receiving %.2f, digest worker %.2f, ZeroMQ I/O %.2f", "",
           r->split[KIND_RECV] / gb, r->split[KIND_HASH] / gb, r->split[KIND_ZMQ] / gb);
    if (worst > 0) printf("; a core each: %.0f MB/s", gb * 1e9 * n / worst / MB);
    printf("\n");
}

/* ------------------------------------------------------------------------------------ */

static int make_certs(int clients) {
    snprintf(certdir, sizeof certdir, "/tmp/fednet-bench-XXXXXX");
    if (!mkdtemp(certdir)) return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s init-ca %s/ca >/dev/null && %s coordinator %s/ca localhost --ip 127.0.0.1 "
             ">/dev/null",
             FED_CERTS_SCRIPT, certdir, FED_CERTS_SCRIPT, certdir);
    if (system(cmd) != 0) return -1;
    for (int i = 1; i <= clients; i++) {
        snprintf(cmd, sizeof cmd, "%s site %s/ca site-%d >/dev/null", FED_CERTS_SCRIPT, certdir, i);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

/* A whole number in [lo, hi] from s, or -1. */
static long number(const char *s, long lo, long hi) {
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= lo && v <= hi ? v : -1;
}

int main(int argc, char **argv) {
    long opt_mb = 256;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
            opt_mb = number(argv[++i], 1, 4096);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            opt_runs = (int)number(argv[++i], 1, 16);
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            opt_clients = (int)number(argv[++i], 1, 64);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            opt_only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_net [--mb 256] [--runs 3] [--clients 8] [--only "
                            "tls|plain|broadcast]\n");
            return 2;
        }
    }
    if (opt_runs < 1 || opt_clients < 1 || opt_mb < 1) {
        fprintf(stderr, "bench_net: --mb 1..4096, --runs 1..16, --clients 1..64\n");
        return 2;
    }
    opt_bytes = (size_t)opt_mb << 20;
    if (make_certs(opt_clients) != 0) {
        fprintf(stderr, "bench_net: cannot make certificates with %s\n", FED_CERTS_SCRIPT);
        return 1;
    }
    printf("bench_net: %.0f MiB, %d runs each, tcp loopback, %ld cores\n", (double)opt_bytes / MB,
           opt_runs, sysconf(_SC_NPROCESSORS_ONLN));
    bool all = !opt_only[0];
    if (all) printf("AES-128-GCM (EVP, 16 KiB blocks): %.0f MB/s\n", aes_gcm_mbs());
    printf("\n%-30s %9s %9s %12s %12s\n", "path", "best MB/s", "median", "coord CPU", "client CPU");
    printf("%-30s %9s %9s %12s %12s\n", "", "", "", "s/GB", "s/GB");
    result tls = {0}, plain = {0}, plain_s = {0}, one = {0}, bc = {0};
    if (all || strcmp(opt_only, "tls") == 0) {
        tls = run_pair(client_process, coordinator_process, 1, opt_runs);
        print_row("TLS channel (+SHA-256 check)", &tls, 1);
    }
    if (all || strcmp(opt_only, "plain") == 0) {
        plain = run_pair(plain_client, plain_coordinator, 1, opt_runs);
        print_row("plain ZeroMQ, 1 MiB frames", &plain, 1);
        plain_sha = true;
        plain_s = run_pair(plain_client, plain_coordinator, 1, opt_runs);
        print_row("plain ZeroMQ + SHA-256 check", &plain_s, 1);
    }
    if (tls.best > 0 && plain.best > 0) {
        printf("\nTLS / plain ZeroMQ:           %.2f best, %.2f median (goal >= 0.80)\n",
               tls.best / plain.best, tls.median / plain.median);
        printf("TLS / (plain + SHA-256):      %.2f best, %.2f median\n", tls.best / plain_s.best,
               tls.median / plain_s.median);
    }
    if (opt_clients > 1 && (all || strcmp(opt_only, "broadcast") == 0)) {
        printf("\nbroadcast of %.0f MiB (aggregate MB/s; peak RSS of the coordinator):\n",
               (double)opt_bytes / MB);
        int counts[2] = {1, opt_clients};
        for (int k = 0; k < 2; k++) {
            result r = run_pair(client_process, coordinator_process, counts[k], opt_runs);
            char label[64];
            snprintf(label, sizeof label, "TLS broadcast, %d client%s", counts[k],
                     counts[k] > 1 ? "s" : "");
            print_row(label, &r, counts[k]);
            printf(
                "%-30s peak RSS %.0f MiB (model %.0f MiB; pool %zu x %.2f MiB, peak %zu in use)\n",
                "", r.rss_mib, (double)opt_bytes / MB, r.pool_max, r.pool_buf_mib, r.pool_peak);
            result p[2];
            for (int h = 0; h < 2; h++) {
                plain_sha = h == 1;
                p[h] = run_pair(plain_client, plain_coordinator, counts[k], opt_runs);
                snprintf(label, sizeof label, "plain%s, %d client%s", h ? " + SHA-256" : "",
                         counts[k], counts[k] > 1 ? "s" : "");
                print_row(label, &p[h], counts[k]);
            }
            printf("%-30s TLS / plain: %.2f best, %.2f median; TLS / (plain + SHA-256): %.2f, "
                   "%.2f\n",
                   "", r.best / p[0].best, r.median / p[0].median, r.best / p[1].best,
                   r.median / p[1].median);
            if (k == 0)
                one = r;
            else
                bc = r;
        }
        printf("coordinator peak RSS grows by %.0f MiB from 1 to %d clients (pool: %.0f MiB)\n",
               bc.rss_mib - one.rss_mib, opt_clients, (double)one.pool_max * one.pool_buf_mib);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    if (system(cmd) != 0) fprintf(stderr, "left %s\n", certdir);
    return 0;
}
