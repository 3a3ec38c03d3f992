/* `mpirun -n N fedtune sim` (cli/sim_mpi.h): the ranks' roles, the certificates from rank
 * 0 to the ranks that need them, the coordinator's endpoint to every rank, the end of the
 * run and each rank's numbers back to rank 0. The simulation itself is fed_sim_run's
 * (sim/sim.h) on every rank; the MPI calls are cli/mpi.c's. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, gethostname */
#endif
#include "cli/sim_mpi.h"

#include "cli/commands.h"
#include "cli/mpi.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "sim/certs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define HOST_MAX 256 /* a host name with its NUL */

fed_err sim_mpi_start(sim_mpi *m) {
    m->up = false;
    fed_err err = cli_mpi_init(&m->rank, &m->size);
    if (err) return err;
    m->up = true;
    if (m->rank > 0 && !freopen("/dev/null", "w", stdout))
        return fed_errorf(FED_EIO, "rank %d: cannot send stdout to /dev/null", m->rank);
    if (m->size < 2)
        return fed_errorf(FED_EINVAL,
                          "--mpi: 1 rank: rank 0 runs the coordinator and the others the "
                          "sites, so launch 2 or more (mpirun -n 3 fedtune sim ...)");
    return FED_OK;
}

fed_err sim_mpi_finish(const sim_mpi *m, fed_err err) {
    fflush(stdout);
    if (!m->up) return err;
    if (!err || m->size < 2) {
        cli_mpi_finalize();
        return err;
    }
    cli_mpi_abort(cli_fail("sim", fed_errprefix(err, "rank %d", m->rank)));
    return err;
}

/* ---- the certificates ------------------------------------------------------------------ */

/* The whole of path: *buf (fed_malloc'd) and *len. */
static fed_err read_file(const char *path, void **buf, size_t *len) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fed_errorf(FED_EIO, "%s: cannot read (%s)", path, strerror(errno));
    fed_err err = FED_OK;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n < 0 || n > (1L << 20) || fseek(f, 0, SEEK_SET) != 0)
        err = fed_errorf(FED_EIO, "%s: not a certificate file of at most 1 MiB", path);
    else if (!(*buf = fed_malloc((size_t)n + 1)))
        err = FED_ENOMEM;
    else if (fread(*buf, 1, (size_t)n, f) != (size_t)n)
        err = fed_errorf(FED_EIO, "%s: cannot read", path);
    fclose(f);
    if (err) {
        fed_free(*buf);
        *buf = NULL;
    }
    *len = err ? 0 : (size_t)n;
    return err;
}

/* buf to path, readable by its owner only (a private key among them). */
static fed_err write_file(const char *path, const void *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return fed_errorf(FED_EIO, "%s: cannot write (%s)", path, strerror(errno));
    bool ok = write(fd, buf, len) == (ssize_t)len;
    ok = close(fd) == 0 && ok;
    return ok ? FED_OK : fed_errorf(FED_EIO, "%s: cannot write", path);
}

/* The k-th certificate file rank r needs, relative to the folder: ca/ca.crt, then for
 * each of its sites (i = r - 1, r - 1 + (size - 1), ...) the certificate and the key.
 * false past the last. */
static bool cert_file(char rel[256], const sim_mpi *m, const fed_sim_config *sc, size_t n, int r,
                      size_t k) {
    if (k == 0) {
        snprintf(rel, 256, "ca/ca.crt");
        return true;
    }
    size_t i = (size_t)(r - 1) + (k - 1) / 2 * (size_t)(m->size - 1);
    if (i >= n) return false;
    char name[64];
    fed_sim_site_name(name, sc, n, i);
    snprintf(rel, 256, "ca/sites/%s/%s.%s", name, name, (k - 1) % 2 ? "key" : "crt");
    return true;
}

/* Rank 0: the files of every other rank, sent in cert_file's order. */
static fed_err send_certs(const sim_mpi *m, const fed_sim_config *sc, size_t n, const char *dir) {
    char rel[256], path[4400];
    fed_err err = FED_OK;
    for (int r = 1; !err && r < m->size; r++)
        for (size_t k = 0; !err && cert_file(rel, m, sc, n, r, k); k++) {
            void *buf = NULL;
            size_t len = 0;
            snprintf(path, sizeof path, "%s/%s", dir, rel);
            if (!(err = read_file(path, &buf, &len))) err = cli_mpi_send(buf, len, r);
            fed_free(buf);
        }
    return err;
}

/* Makes the folder path (its parent exists); one that exists already is fine. */
static fed_err make_dir(const char *path) {
    if (mkdir(path, 0700) == 0 || errno == EEXIST) return FED_OK;
    return fed_errorf(FED_EIO, "%s: cannot make the folder (%s)", path, strerror(errno));
}

/* Ranks 1..: this rank's files from rank 0, written under dir as rank 0 has them. */
static fed_err recv_certs(const sim_mpi *m, const fed_sim_config *sc, size_t n, const char *dir) {
    char rel[256], path[4400];
    snprintf(path, sizeof path, "%s/ca", dir);
    fed_err err = make_dir(path);
    snprintf(path, sizeof path, "%s/ca/sites", dir);
    if (!err) err = make_dir(path);
    for (size_t k = 0; !err && cert_file(rel, m, sc, n, m->rank, k); k++) {
        snprintf(path, sizeof path, "%s/%s", dir, rel);
        char *slash = strrchr(path, '/');
        *slash = '\0'; /* the site's folder */
        if (k % 2 == 1 && (err = make_dir(path))) break;
        *slash = '/';
        void *buf = NULL;
        size_t len = 0;
        if (!(err = cli_mpi_recv(&buf, &len))) err = write_file(path, buf, len);
        fed_free(buf);
    }
    return err;
}

/* ---- the endpoint ---------------------------------------------------------------------- */

/* What on_listen needs and tells. */
typedef struct listen_ctx {
    const sim_mpi *m;
    char host[HOST_MAX]; /* rank 0's host name */
} listen_ctx;

/* Rank 0, once the coordinator listens: its host name and port to every rank. */
static fed_err on_listen(void *user, const char *endpoint) {
    listen_ctx *lc = user;
    const char *colon = strrchr(endpoint, ':');
    char msg[HOST_MAX + 16];
    memset(msg, 0, sizeof msg);
    if (!colon || !colon[1])
        return fed_errorf(FED_EINTERNAL, "the coordinator's endpoint %s has no port", endpoint);
    snprintf(msg, sizeof msg, "%s:%s", lc->host, colon + 1);
    printf("mpi: %d ranks: the coordinator on rank 0 at %s (TLS), the sites on ranks 1..%d "
           "(site i on rank 1 + i mod %d)\n",
           lc->m->size, endpoint, lc->m->size - 1, lc->m->size - 1);
    fflush(stdout);
    return cli_mpi_bcast(msg, sizeof msg);
}

/* Ranks 1..: rank 0's host:port as the endpoint to connect to: 127.0.0.1 on rank 0's own
 * host (myhost is its name; "" with --mpi-host), else the name rank 0 sent. */
static fed_err recv_endpoint(char *out, size_t len, const char *myhost) {
    char msg[HOST_MAX + 16];
    fed_err err = cli_mpi_bcast(msg, sizeof msg);
    if (err) return err;
    msg[sizeof msg - 1] = '\0';
    char *colon = strrchr(msg, ':');
    if (!colon) return fed_errorf(FED_EINTERNAL, "rank 0 sent no endpoint");
    *colon = '\0';
    snprintf(out, len, "tcp://%s:%s", strcmp(msg, myhost) == 0 ? "127.0.0.1" : msg, colon + 1);
    return FED_OK;
}

static bool coord_ended(void *user) {
    (void)user;
    return cli_mpi_end_test();
}

/* ---- the run ---------------------------------------------------------------------------- */

/* One rank's closing numbers, gathered on rank 0. */
typedef struct rank_report {
    double seconds, setup;       /* the rounds, the set-up */
    double rss_mb;               /* peak resident set */
    uint64_t hosted;             /* its sites */
    uint64_t dropped, straggled; /* its sites' simulated failures */
    uint64_t bytes;              /* its sites' payload bytes, both ways */
} rank_report;

/* Rank 0: one line per rank and the total; the sites' failures into *res. */
static void print_reports(const rank_report *all, int size, fed_sim_result *res) {
    double sum = 0, most = 0;
    for (int r = 0; r < size; r++) {
        const rank_report *p = &all[r];
        res->dropped += r ? p->dropped : 0;
        res->straggled += r ? p->straggled : 0;
        double kb = (double)p->bytes / 1e3 / (double)(res->rounds ? res->rounds : 1);
        if (r == 0)
            printf("rank 0: the coordinator, %.1f s (+%.1f s set-up), peak RSS %.1f MB\n",
                   p->seconds, p->setup, p->rss_mb);
        else
            printf("rank %d: %" PRIu64 " sites, %.1f s (+%.1f s set-up), %.*f %s a round, "
                   "peak RSS %.1f MB\n",
                   r, p->hosted, p->seconds, p->setup, kb < 1e3 ? 1 : 2, kb < 1e3 ? kb : kb / 1e3,
                   kb < 1e3 ? "kB" : "MB", p->rss_mb);
        sum += p->rss_mb;
        if (p->rss_mb > most) most = p->rss_mb;
    }
    printf("mpi: %d ranks, peak RSS %.1f MB in all, %.1f MB the most of one rank\n", size, sum,
           most);
}

/* Every rank's host name, and whether all are rank 0's (gathered there, then told). */
static fed_err same_host(const sim_mpi *m, char host[HOST_MAX], bool *one) {
    memset(host, 0, HOST_MAX);
    if (gethostname(host, HOST_MAX - 1) != 0) snprintf(host, HOST_MAX, "localhost");
    char *all = m->rank == 0 ? fed_calloc((size_t)m->size, HOST_MAX) : NULL;
    if (m->rank == 0 && !all) return FED_ENOMEM;
    fed_err err = cli_mpi_gather(host, HOST_MAX, all);
    int flag = 1;
    for (int r = 1; !err && m->rank == 0 && r < m->size; r++)
        flag &= strcmp(all + (size_t)r * HOST_MAX, host) == 0;
    fed_free(all);
    if (!err) err = cli_mpi_bcast(&flag, sizeof flag);
    *one = flag != 0;
    return err;
}

fed_err sim_mpi_run(const sim_mpi *m, fed_sim_config *sc, fed_model **final, fed_sim_result *res) {
    const size_t n = sc->partition ? sc->partition->clients : sc->part.clients;
    memset(res, 0, sizeof *res);
    if (sc->on_update)
        return fed_errorf(FED_EUNSUPPORTED, "--mpi: on_update sees the sites of one process");
    char dir[64] = "/tmp/fedsim-mpi-XXXXXX", endpoint[HOST_MAX + 32];
    double t0 = fed_now_s(), certs_s = 0;
    listen_ctx lc = {m, ""};
    bool one_host = true;
    char myhost[HOST_MAX];
    fed_err err = same_host(m, myhost, &one_host);
    if (err) return err;
    snprintf(lc.host, sizeof lc.host, "%s", m->host ? m->host : myhost);
    if (!mkdtemp(dir)) return fed_errorf(FED_EIO, "tls: cannot make a temporary folder");
    sc->tls = true; /* plaintext is for inproc:// only */
    sc->cert_dir = dir;
    sc->dist_user = &lc;
    if (m->rank == 0) {
        sc->role = FED_SIM_COORDINATOR;
        sc->endpoint = one_host && !m->host ? "tcp://127.0.0.1:*" : "tcp://*:*";
        sc->on_listen = on_listen;
        if (!(err = fed_sim_make_certs(sc, n, dir))) err = send_certs(m, sc, n, dir);
        certs_s = fed_now_s() - t0;
    } else {
        sc->role = FED_SIM_SITES;
        sc->host_stride = (size_t)(m->size - 1);
        sc->host_index = (size_t)(m->rank - 1);
        sc->coord_ended = coord_ended;
        sc->connect_timeout_s = m->connect_timeout_s;
        if (!(err = recv_certs(m, sc, n, dir)))
            err = recv_endpoint(endpoint, sizeof endpoint, m->host ? "" : myhost);
        sc->endpoint = endpoint;
        if (!err) err = cli_mpi_end_enter(); /* rank 0 enters when the coordinator ends */
    }
    if (!err) err = fed_sim_run(sc, m->rank == 0 ? final : NULL, res);
    res->setup_seconds += certs_s; /* rank 0's set-up includes the certificates */
    if (!err) err = cli_mpi_end_enter();
    if (!err) err = cli_mpi_end_wait();
    if (fed_sim_remove_tree(dir) != 0 && !err)
        err = fed_errorf(FED_EIO, "%s: cannot remove the certificates", dir);
    if (err) return err;
    struct rusage ru;
    rank_report mine = {.seconds = res->seconds,
                        .setup = res->setup_seconds,
                        .hosted = res->hosted,
                        .dropped = res->dropped,
                        .straggled = res->straggled,
                        .bytes = res->site_bytes};
    if (getrusage(RUSAGE_SELF, &ru) == 0) mine.rss_mb = (double)ru.ru_maxrss / 1024.0;
    rank_report *all = m->rank == 0 ? fed_calloc((size_t)m->size, sizeof *all) : NULL;
    if (m->rank == 0 && !all) return FED_ENOMEM;
    if (!(err = cli_mpi_gather(&mine, sizeof mine, all)) && m->rank == 0)
        print_reports(all, m->size, res);
    fed_free(all);
    return err;
}
