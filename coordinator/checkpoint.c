/* The coordinator's checkpoints: one safetensors file per round for the global model
 * (with the digests that make a torn or corrupted file detectable) and one for the
 * strategy state, written atomically, pruned to the newest few, and read back newest
 * first on start. The round engine itself lives in coordinator.c. */
#include "coordinator/checkpoint.h"
#include "coordinator/coordinator.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_ROUND     "fedtune.round"
#define META_MVERSION  "fedtune.model_version"
#define META_STRATEGY  "fedtune.strategy"
#define META_SROUNDS   "fedtune.strategy_rounds"
#define META_SEED      "fedtune.sampling_seed"
#define META_SHA       "fedtune.sha256"
#define META_STATE_SHA "fedtune.strategy_sha256"

/* Most checkpoint files considered when resuming or pruning. */
#define MAX_FILES 4096

void fed_ckpt_path(char *buf, size_t len, const char *dir, uint64_t round) {
    snprintf(buf, len, "%s/round-%06" PRIu64 ".safetensors", dir, round);
}

static void state_path(char *buf, size_t len, const char *dir, uint64_t round) {
    snprintf(buf, len, "%s/round-%06" PRIu64 ".strategy.safetensors", dir, round);
}

static void hex(const uint8_t *d, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 (hex) of the strategy's buffers concatenated; "" for none. */
static fed_err state_digest(const fed_strategy *s, char out[2 * FED_SHA256_LEN + 1]) {
    fed_strategy_header h;
    const float *bufs[FED_STRATEGY_MAX_BUFS];
    const char *names[FED_STRATEGY_MAX_BUFS];
    fed_strategy_state(s, &h, bufs, names);
    out[0] = '\0';
    if (h.nbufs == 0) return FED_OK;
    size_t n = (size_t)h.n, bytes;
    if (!fed_mul_ok(n, sizeof(float) * h.nbufs, &bytes)) return FED_ENOMEM;
    uint8_t *cat = fed_malloc(bytes);
    if (!cat) return fed_errorf(FED_ENOMEM, "checkpoint: %zu bytes", bytes);
    for (uint32_t i = 0; i < h.nbufs; i++) memcpy(cat + i * n * sizeof(float), bufs[i], n * 4);
    uint8_t d[FED_SHA256_LEN];
    fed_sha256(cat, bytes, d);
    fed_free(cat);
    hex(d, FED_SHA256_LEN, out);
    return FED_OK;
}

static fed_err fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return fed_errorf(FED_EIO, "fsync %s: %s", dir, strerror(e));
    return FED_OK;
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Rounds of the checkpoint model files in dir, newest first. */
static fed_err list_rounds(const char *dir, uint64_t *rounds, size_t *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return FED_OK;
        return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d)) && *n < MAX_FILES) {
        unsigned long long r;
        int used = 0;
        if (sscanf(e->d_name, "round-%llu.safetensors%n", &r, &used) == 1 && used > 0 &&
            e->d_name[used] == '\0' && strlen(e->d_name) == 24 && r > 0)
            rounds[(*n)++] = (uint64_t)r;
    }
    closedir(d);
    qsort(rounds, *n, sizeof *rounds, cmp_desc);
    return FED_OK;
}

static fed_err set_u64(fed_meta *m, const char *key, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return fed_meta_set(m, key, buf);
}

fed_err fed_ckpt_write(const char *dir, uint64_t round, uint64_t model_version, const fed_model *m,
                       const fed_strategy *s, uint64_t sampling_seed, size_t keep,
                       const fed_meta *extra) {
    char path[4096], spath[4096], sha[2 * FED_SHA256_LEN + 1], ssha[2 * FED_SHA256_LEN + 1];
    fed_meta *meta = NULL, *smeta = NULL;
    uint64_t *rounds = NULL;
    fed_err err;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
    fed_strategy_header h;
    const float *bufs[FED_STRATEGY_MAX_BUFS];
    const char *names[FED_STRATEGY_MAX_BUFS];
    fed_strategy_state(s, &h, bufs, names);

    /* The strategy state first: the model file, written last, is the commit record. */
    if ((err = state_digest(s, ssha))) goto done;
    state_path(spath, sizeof spath, dir, round);
    if (h.nbufs > 0) {
        fed_st_entry e[FED_STRATEGY_MAX_BUFS];
        size_t shape[1] = {(size_t)h.n};
        for (uint32_t i = 0; i < h.nbufs; i++) {
            e[i].name = names[i];
            e[i].ndim = 1;
            e[i].shape = shape;
            e[i].data = bufs[i];
        }
        if ((err = fed_meta_new(&smeta))) goto done;
        if ((err =
                 fed_meta_set(smeta, META_STRATEGY, fed_strategy_name((fed_strategy_kind)h.kind))))
            goto done;
        if ((err = set_u64(smeta, META_SROUNDS, h.rounds))) goto done;
        if ((err = fed_st_write(spath, e, h.nbufs, smeta))) goto done;
    }

    uint8_t d[FED_SHA256_LEN];
    fed_sha256(fed_model_params_const(m), fed_model_num_params(m) * sizeof(float), d);
    hex(d, FED_SHA256_LEN, sha);
    if ((err = fed_meta_new(&meta))) goto done;
    if ((err = set_u64(meta, META_ROUND, round))) goto done;
    if ((err = set_u64(meta, META_MVERSION, model_version))) goto done;
    if ((err = fed_meta_set(meta, META_STRATEGY, fed_strategy_name((fed_strategy_kind)h.kind))))
        goto done;
    if ((err = set_u64(meta, META_SROUNDS, h.rounds))) goto done;
    if ((err = set_u64(meta, META_SEED, sampling_seed))) goto done;
    if ((err = fed_meta_set(meta, META_SHA, sha))) goto done;
    if ((err = fed_meta_set(meta, META_STATE_SHA, ssha))) goto done;
    for (size_t i = 0; extra && i < fed_meta_count(extra); i++)
        if ((err = fed_meta_set(meta, fed_meta_key(extra, i), fed_meta_value(extra, i)))) goto done;
    fed_ckpt_path(path, sizeof path, dir, round);
    if ((err = fed_model_save(m, path, meta))) goto done;
    if ((err = fsync_dir(dir))) goto done;

    /* Prune: keep the newest `keep` rounds. */
    size_t n = 0;
    if (!(rounds = fed_calloc(MAX_FILES, sizeof *rounds))) {
        err = FED_ENOMEM;
        goto done;
    }
    if ((err = list_rounds(dir, rounds, &n))) goto done;
    for (size_t i = keep; i < n; i++) {
        fed_ckpt_path(path, sizeof path, dir, rounds[i]);
        state_path(spath, sizeof spath, dir, rounds[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            FED_LOG(FED_LOG_WARN, "checkpoint: cannot delete %s: %s", path, strerror(errno));
        (void)unlink(spath);
    }
    if (n > keep) err = fsync_dir(dir);
done:
    fed_free(rounds);
    fed_meta_destroy(&meta);
    fed_meta_destroy(&smeta);
    return err;
}

static bool meta_u64(const fed_meta *m, const char *key, uint64_t *v) {
    const char *s = fed_meta_get(m, key);
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *v = (uint64_t)x;
    return true;
}

/* Loads round r into tmp (a copy of the model) and st (a fresh strategy); FED_EFORMAT
 * or FED_EDIGEST with the reason when the files do not verify. */
static fed_err load_one(const char *dir, uint64_t r, fed_model *tmp, fed_strategy *st,
                        uint64_t *mversion) {
    char path[4096], spath[4096], sha[2 * FED_SHA256_LEN + 1], ssha[2 * FED_SHA256_LEN + 1];
    fed_st_file *f = NULL, *sf = NULL;
    fed_err err;
    fed_ckpt_path(path, sizeof path, dir, r);
    if ((err = fed_st_read(&f, path))) goto done;
    const fed_meta *meta = fed_st_meta(f);
    uint64_t round = 0;
    if (!meta_u64(meta, META_ROUND, &round) || round != r ||
        !meta_u64(meta, META_MVERSION, mversion)) {
        err =
            fed_errorf(FED_EFORMAT, "%s: no valid %s/%s metadata", path, META_ROUND, META_MVERSION);
        goto done;
    }
    if ((err = fed_model_load_weights(tmp, f, FED_LOAD_STRICT))) goto done;
    uint8_t d[FED_SHA256_LEN];
    fed_sha256(fed_model_params_const(tmp), fed_model_num_params(tmp) * sizeof(float), d);
    hex(d, FED_SHA256_LEN, sha);
    const char *want = fed_meta_get(meta, META_SHA);
    if (!want || strcmp(want, sha) != 0) {
        err = fed_errorf(FED_EDIGEST, "%s: parameters do not match their SHA-256", path);
        goto done;
    }
    fed_strategy_header h;
    const float *cur[FED_STRATEGY_MAX_BUFS];
    const char *names[FED_STRATEGY_MAX_BUFS];
    fed_strategy_state(st, &h, cur, names);
    const char *sname = fed_meta_get(meta, META_STRATEGY);
    if (!sname || strcmp(sname, fed_strategy_name((fed_strategy_kind)h.kind)) != 0) {
        /* Another strategy: start its state afresh, keep the weights. */
        FED_LOG(FED_LOG_WARN, "checkpoint %s: strategy %s, now %s: its state starts afresh", path,
                sname ? sname : "?", fed_strategy_name((fed_strategy_kind)h.kind));
        goto done;
    }
    uint64_t srounds = 0;
    if (!meta_u64(meta, META_SROUNDS, &srounds)) {
        err = fed_errorf(FED_EFORMAT, "%s: no %s", path, META_SROUNDS);
        goto done;
    }
    const float *bufs[FED_STRATEGY_MAX_BUFS] = {NULL, NULL};
    if (h.nbufs > 0) {
        state_path(spath, sizeof spath, dir, r);
        if ((err = fed_st_read(&sf, spath))) goto done;
        for (uint32_t i = 0; i < h.nbufs; i++) {
            const fed_st_tensor *t = fed_st_find(sf, names[i]);
            if (!t || t->dtype != FED_ST_F32 || t->numel != h.n) {
                err = fed_errorf(FED_EFORMAT, "%s: no F32 tensor %s of %" PRIu64 " values", spath,
                                 names[i], h.n);
                goto done;
            }
        }
    }
    /* Copy the state buffers out and check their digest. */
    float *scratch = NULL;
    if (h.nbufs > 0) {
        size_t n = (size_t)h.n;
        if (!(scratch = fed_mallocarray(n * h.nbufs, sizeof(float)))) {
            err = FED_ENOMEM;
            goto done;
        }
        for (uint32_t i = 0; i < h.nbufs; i++) {
            fed_st_copy_f32(sf, fed_st_find(sf, names[i]), scratch + i * n);
            bufs[i] = scratch + i * n;
        }
        uint8_t sd[FED_SHA256_LEN];
        fed_sha256(scratch, n * h.nbufs * sizeof(float), sd);
        hex(sd, FED_SHA256_LEN, ssha);
        const char *swant = fed_meta_get(meta, META_STATE_SHA);
        if (!swant || strcmp(swant, ssha) != 0) {
            fed_free(scratch);
            err = fed_errorf(FED_EDIGEST, "%s: strategy state does not match its SHA-256", spath);
            goto done;
        }
    }
    fed_strategy_header nh = h;
    nh.rounds = srounds;
    err = fed_strategy_restore(st, &nh, bufs);
    fed_free(scratch);
    if (err) err = fed_errprefix(err, "%s", spath);
done:
    fed_st_close(&f);
    fed_st_close(&sf);
    return err;
}

/* A copy of the metadata of round r's model file into *out. */
static fed_err read_meta(const char *dir, uint64_t r, fed_meta **out) {
    char path[4096];
    fed_st_file *f = NULL;
    fed_ckpt_path(path, sizeof path, dir, r);
    fed_err err = fed_st_read(&f, path);
    if (!err) err = fed_meta_new(out);
    const fed_meta *m = err ? NULL : fed_st_meta(f);
    for (size_t i = 0; m && !err && i < fed_meta_count(m); i++)
        err = fed_meta_set(*out, fed_meta_key(m, i), fed_meta_value(m, i));
    fed_st_close(&f);
    if (err) fed_meta_destroy(out);
    return err;
}

/* Whether name is a temporary file of our own checkpoint writes (fed_st_write's
 * "<file>.tmp.XXXXXX" of round-NNNNNN[.strategy].safetensors), left by a crash. */
static bool is_leftover(const char *name) {
    if (strncmp(name, "round-", 6) != 0) return false;
    const char *p = name + 6, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q - p < 6) return false;
    if (strncmp(q, ".strategy", 9) == 0) q += 9;
    if (strncmp(q, ".safetensors.tmp.", 17) != 0) return false;
    q += 17;
    for (int i = 0; i < 6; i++, q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')))
            return false;
    return *q == '\0';
}

fed_err fed_ckpt_sweep(const char *dir, size_t *removed) {
    *removed = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return FED_OK;
        return fed_errorf(FED_EIO, "%s: %s", dir, strerror(errno));
    }
    fed_err err = FED_OK;
    uint64_t bytes = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!is_leftover(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (unlink(path) != 0) {
            err = fed_errorf(FED_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        bytes += (uint64_t)st.st_size;
        (*removed)++;
    }
    closedir(d);
    if (*removed) /* a warning: an earlier run crashed while writing a checkpoint */
        FED_LOG(FED_LOG_WARN,
                "%s: removed %zu temporary files (%" PRIu64 " bytes) of an interrupted "
                "checkpoint write",
                dir, *removed, bytes);
    return err;
}

fed_err fed_ckpt_resume(const char *dir, fed_model *m, fed_strategy *s, uint64_t *round,
                        uint64_t *model_version, fed_meta **meta) {
    if (meta) *meta = NULL;
    *round = 0;
    uint64_t *rounds = fed_calloc(MAX_FILES, sizeof *rounds);
    fed_model *tmp = NULL;
    fed_err err = FED_ENOMEM;
    if (!rounds) goto done;
    size_t n = 0;
    if ((err = list_rounds(dir, rounds, &n))) goto done;
    for (size_t i = 0; i < n; i++) {
        fed_model_destroy(&tmp);
        if ((err = fed_model_clone(&tmp, m))) goto done;
        uint64_t mv = 0;
        /* Restoring into s only happens after everything else verified. */
        err = load_one(dir, rounds[i], tmp, s, &mv);
        if (err) {
            char path[4096];
            fed_ckpt_path(path, sizeof path, dir, rounds[i]);
            FED_LOG(FED_LOG_WARN, "checkpoint %s is not usable (%s); trying the previous one", path,
                    fed_errdetail(err));
            continue;
        }
        if (meta && (err = read_meta(dir, rounds[i], meta))) goto done;
        if ((err = fed_model_copy_params(m, tmp))) goto done;
        *round = rounds[i];
        *model_version = mv;
        FED_LOG(FED_LOG_INFO, "resumed from round %" PRIu64 " (model version %" PRIu64 ") in %s",
                rounds[i], mv, dir);
        goto done;
    }
    err = FED_OK;
done:
    fed_model_destroy(&tmp);
    fed_free(rounds);
    return err;
}
