/* The store of frozen bases (client/client.h fed_base_cache): the tensors of a model that
 * no round changes, kept by the SHA-256 of their little-endian bytes so that a site
 * receives them once. Entries live in memory while a round uses them, and the last
 * MEM_KEEP ones stay when none does; with a folder, every base is also a file
 * <folder>/<64 hex digits>.base (the raw bytes, written to a temporary file, synced and
 * renamed), read back and checked against its name when a later session needs it, so a
 * restarted site does not download it again. A file whose bytes do not match its name is
 * removed, with a warning, and counts as absent: the coordinator then sends everything.
 * One lock guards the store: a simulation's sites share one store across threads.
 * What does not live here: deciding when a base is needed (site_round.c). */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/log.h"
#include "net/channel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEM_KEEP 2 /* unused bases kept in memory */

struct site_base {
    uint8_t sha[FED_SHA256_LEN]; /* of the bytes */
    float *data;                 /* (n) host order */
    size_t n;                    /* floats */
    size_t refs;                 /* rounds using it */
    uint64_t used;               /* the store's clock when last handed out */
    struct site_base *next;
};

struct fed_base_cache {
    char *dir;            /* folder of the files, or NULL: memory only */
    pthread_mutex_t mu;   /* guards everything below */
    struct site_base *in; /* entries in memory */
    uint64_t clock;       /* counts hand-outs */
};

static void hex_of(const uint8_t sha[FED_SHA256_LEN], char hex[2 * FED_SHA256_LEN + 1]) {
    for (size_t i = 0; i < FED_SHA256_LEN; i++) snprintf(hex + 2 * i, 3, "%02x", sha[i]);
}

fed_err fed_base_cache_new(fed_base_cache **out, const char *dir) {
    *out = NULL;
    if (dir && !dir[0]) dir = NULL;
    if (dir) {
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return fed_errorf(FED_EIO, "%s: not a folder", dir);
    }
    fed_base_cache *c = fed_calloc(1, sizeof *c);
    if (!c) return FED_ENOMEM;
    if (dir && !(c->dir = fed_strdup(dir))) {
        fed_free(c);
        return FED_ENOMEM;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        fed_free(c->dir);
        fed_free(c);
        return fed_errorf(FED_EINTERNAL, "base cache: cannot make its lock");
    }
    *out = c;
    return FED_OK;
}

void fed_base_cache_destroy(fed_base_cache **pc) {
    fed_base_cache *c = pc ? *pc : NULL;
    if (!c) return;
    for (struct site_base *b = c->in, *nx; b; b = nx) {
        nx = b->next;
        fed_free(b->data);
        fed_free(b);
    }
    pthread_mutex_destroy(&c->mu);
    fed_free(c->dir);
    fed_free(c);
    *pc = NULL;
}

/* Drops unused entries beyond MEM_KEEP, the least recently used first. Lock held. */
static void trim(fed_base_cache *c) {
    for (;;) {
        size_t idle = 0;
        struct site_base **oldest = NULL;
        for (struct site_base **p = &c->in; *p; p = &(*p)->next)
            if (!(*p)->refs) {
                idle++;
                if (!oldest || (*p)->used < (*oldest)->used) oldest = p;
            }
        if (idle <= MEM_KEEP) return;
        struct site_base *b = *oldest;
        *oldest = b->next;
        fed_free(b->data);
        fed_free(b);
    }
}

static struct site_base *find(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN]) {
    for (struct site_base *b = c->in; b; b = b->next)
        if (memcmp(b->sha, sha, FED_SHA256_LEN) == 0) return b;
    return NULL;
}

/* Reads <dir>/<hex>.base into a new buffer of n floats if it is there, n floats long and
 * matches sha; *data NULL otherwise (a mismatching file is removed). Lock held. */
static fed_err load(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], size_t n, float **data) {
    *data = NULL;
    char hex[2 * FED_SHA256_LEN + 1], path[4096];
    hex_of(sha, hex);
    if ((size_t)snprintf(path, sizeof path, "%s/%s.base", c->dir, hex) >= sizeof path)
        return fed_errorf(FED_EIO, "base cache %s: path too long", c->dir);
    FILE *f = fopen(path, "rb");
    if (!f) return FED_OK;
    float *d = fed_mallocarray(n, sizeof *d);
    if (!d) {
        fclose(f);
        return FED_ENOMEM;
    }
    size_t got = fread(d, sizeof *d, n, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    uint8_t have[FED_SHA256_LEN];
    if (got == n && !more) fed_sha256(d, n * sizeof *d, have);
    if (got != n || more || memcmp(have, sha, FED_SHA256_LEN) != 0) {
        FED_LOG(FED_LOG_WARN, "base cache: %s does not hold the base its name says: removed", path);
        (void)unlink(path);
        fed_free(d);
        return FED_OK;
    }
    *data = d;
    return FED_OK;
}

/* Writes the base to <dir>/<hex>.base: temporary file, fsync, rename. Lock held. */
static fed_err store(fed_base_cache *c, const struct site_base *b) {
    char hex[2 * FED_SHA256_LEN + 1], path[4096], tmp[4096 + 32];
    hex_of(b->sha, hex);
    if ((size_t)snprintf(path, sizeof path, "%s/%s.base", c->dir, hex) >= sizeof path)
        return fed_errorf(FED_EIO, "base cache %s: path too long", c->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return fed_errorf(FED_EIO, "base cache %s: %s", tmp, strerror(errno));
    const char *p = (const char *)b->data;
    size_t left = b->n * sizeof *b->data;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            (void)unlink(tmp);
            return fed_errorf(FED_EIO, "base cache %s: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        (void)unlink(tmp);
        return fed_errorf(FED_EIO, "base cache %s: %s", path, strerror(e));
    }
    return FED_OK;
}

/* A new entry holding data (taken: freed on failure), or NULL for FED_ENOMEM. Lock held. */
static struct site_base *insert(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], float *data,
                                size_t n) {
    struct site_base *b = fed_calloc(1, sizeof *b);
    if (!b) {
        fed_free(data);
        return NULL;
    }
    memcpy(b->sha, sha, FED_SHA256_LEN);
    b->data = data;
    b->n = n;
    b->next = c->in;
    c->in = b;
    return b;
}

/* Counts a use of b (may be NULL) for *out, trims and unlocks. */
static void hand_out(fed_base_cache *c, struct site_base *b, site_base **out) {
    if (b) {
        b->refs++;
        b->used = ++c->clock;
        *out = b;
    }
    trim(c);
    pthread_mutex_unlock(&c->mu);
}

fed_err site_base_get(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], size_t n,
                      site_base **out) {
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    fed_err err = FED_OK;
    struct site_base *b = find(c, sha);
    if (b && b->n != n) b = NULL; /* the same bytes as another size: cannot be */
    float *d = NULL;
    if (!b && c->dir && !(err = load(c, sha, n, &d)) && d && !(b = insert(c, sha, d, n)))
        err = FED_ENOMEM;
    hand_out(c, b, out);
    return err;
}

fed_err site_base_put(fed_base_cache *c, const uint8_t sha[FED_SHA256_LEN], float *data, size_t n,
                      site_base **out) {
    *out = NULL;
    pthread_mutex_lock(&c->mu);
    fed_err err = FED_OK;
    struct site_base *b = find(c, sha);
    if (b) {
        fed_free(data); /* another site stored it first */
    } else if (!(b = insert(c, sha, data, n))) {
        err = FED_ENOMEM;
    } else if (c->dir && (err = store(c, b))) {
        FED_LOG(FED_LOG_WARN, "%s: the base is kept in memory only", fed_errmsg());
        err = FED_OK;
    }
    hand_out(c, b, out);
    return err;
}

void site_base_release(fed_base_cache *c, site_base **pb) {
    site_base *b = *pb;
    if (!b) return;
    pthread_mutex_lock(&c->mu);
    b->refs--;
    trim(c);
    pthread_mutex_unlock(&c->mu);
    *pb = NULL;
}

const float *site_base_data(const site_base *b) {
    return b->data;
}

/* Is name "<64 lower-case hex digits>.base"? Then sha gets the digits' bytes. */
static bool base_file(const char *name, uint8_t sha[FED_SHA256_LEN]) {
    if (strlen(name) != 2 * FED_SHA256_LEN + 5 || strcmp(name + 2 * FED_SHA256_LEN, ".base") != 0)
        return false;
    for (size_t i = 0; i < FED_SHA256_LEN; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = name[2 * i + (size_t)k];
            if (ch >= '0' && ch <= '9')
                v = v * 16 + (unsigned)(ch - '0');
            else if (ch >= 'a' && ch <= 'f')
                v = v * 16 + (unsigned)(ch - 'a' + 10);
            else
                return false;
        }
        sha[i] = (uint8_t)v;
    }
    return true;
}

size_t site_base_list(fed_base_cache *c, uint8_t (*out)[FED_SHA256_LEN], size_t max) {
    pthread_mutex_lock(&c->mu);
    size_t n = 0;
    for (struct site_base *b = c->in; b && n < max; b = b->next)
        memcpy(out[n++], b->sha, FED_SHA256_LEN);
    DIR *d = c->dir ? opendir(c->dir) : NULL;
    for (struct dirent *e; d && n < max && (e = readdir(d));) {
        uint8_t sha[FED_SHA256_LEN];
        if (!base_file(e->d_name, sha) || find(c, sha)) continue;
        memcpy(out[n++], sha, FED_SHA256_LEN);
    }
    if (d) closedir(d);
    pthread_mutex_unlock(&c->mu);
    return n;
}
