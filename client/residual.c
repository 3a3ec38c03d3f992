/* The site's error-feedback residual on disk (<state_dir>/residual.bin): what the uplink
 * codec has not sent yet survives a restart of `fedtune client`. Layout, little-endian:
 * 8 bytes "FEDRESv1", u64 n, n float32, then the SHA-256 of everything before it. Written
 * to a temporary file, fsynced and renamed over the old one, so a crash leaves the old
 * file or the new one; read back strictly (length, magic, n, digest, finite values). What
 * does not live here: what the residual means ("compress", stage_compress.c). */
#include "client/site_internal.h"

#include "core/alloc.h"
#include "core/arch.h"
#include "core/endian.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "FEDRESv1"
#define HEAD  16 /* magic, n */

static fed_err path_of(char *path, size_t len, const char *dir) {
    if ((size_t)snprintf(path, len, "%s/residual.bin", dir) >= len)
        return fed_errorf(FED_EIO, "state-dir %s: path too long", dir);
    return FED_OK;
}

fed_err site_resid_save(const char *dir, const float *e, size_t n) {
    char path[4096], tmp[4096 + 32];
    fed_err err = path_of(path, sizeof path, dir);
    if (err) return err;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    size_t len = HEAD + 4 * n + FED_SHA256_LEN;
    uint8_t *b = fed_malloc(len);
    if (!b) return FED_ENOMEM;
    memcpy(b, MAGIC, 8);
    fed_store_le64(b + 8, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &e[i], 4);
        fed_store_le32(b + HEAD + 4 * i, u);
    }
    fed_sha256(b, HEAD + 4 * n, b + HEAD + 4 * n);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        err = fed_errorf(FED_EIO, "state-dir %s: %s", tmp, strerror(errno));
        goto done;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, b + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            err = fed_errorf(FED_EIO, "state-dir %s: %s", tmp, strerror(errno));
            close(fd);
            (void)unlink(tmp);
            goto done;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        err = fed_errorf(FED_EIO, "state-dir %s: %s", path, strerror(errno));
        (void)unlink(tmp);
    }
done:
    fed_free(b);
    return err;
}

fed_err site_resid_parse(const uint8_t *b, size_t len, const char *path, float **e, size_t *n) {
    *e = NULL;
    *n = 0;
    if (len < HEAD + FED_SHA256_LEN)
        return fed_errorf(FED_EFORMAT, "%s: %zu bytes, too short for a residual file", path, len);
    if (memcmp(b, MAGIC, 8) != 0)
        return fed_errorf(FED_EFORMAT, "%s: not a fedtune residual file (magic)", path);
    uint64_t m = fed_load_le64(b + 8);
    if (m > FED_MAX_PARAMS || len != HEAD + 4 * m + FED_SHA256_LEN)
        return fed_errorf(FED_EFORMAT, "%s: n %llu, but the file has %zu bytes", path,
                          (unsigned long long)m, len);
    uint8_t sha[FED_SHA256_LEN];
    fed_sha256(b, HEAD + 4 * (size_t)m, sha);
    if (memcmp(sha, b + HEAD + 4 * m, FED_SHA256_LEN) != 0)
        return fed_errorf(FED_EFORMAT, "%s: digest mismatch (torn or corrupted)", path);
    float *v = fed_mallocarray(m ? (size_t)m : 1, sizeof *v);
    if (!v) return FED_ENOMEM;
    for (size_t i = 0; i < (size_t)m; i++) {
        uint32_t u = fed_load_le32(b + HEAD + 4 * i);
        memcpy(&v[i], &u, 4);
        if (!isfinite(v[i])) {
            fed_free(v);
            return fed_errorf(FED_EFORMAT, "%s: value %zu is not finite", path, i);
        }
    }
    *e = v;
    *n = (size_t)m;
    return FED_OK;
}

fed_err site_resid_load(const char *dir, float **e, size_t *n) {
    char path[4096];
    *e = NULL;
    *n = 0;
    fed_err err = path_of(path, sizeof path, dir);
    if (err) return err;
    int fd = open(path, O_RDONLY);
    if (fd < 0 && errno == ENOENT) return FED_OK; /* nothing carried yet */
    if (fd < 0) return fed_errorf(FED_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    uint8_t *b = NULL;
    size_t len = 0;
    if (fstat(fd, &st) != 0 || st.st_size < 0 ||
        (uint64_t)st.st_size > HEAD + 4 * (uint64_t)FED_MAX_PARAMS + FED_SHA256_LEN) {
        err = fed_errorf(FED_EFORMAT, "%s: not a residual file (size)", path);
        goto done;
    }
    len = (size_t)st.st_size;
    if (!(b = fed_malloc(len ? len : 1))) {
        err = FED_ENOMEM;
        goto done;
    }
    for (size_t off = 0; off < len;) {
        ssize_t r = read(fd, b + off, len - off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            err =
                fed_errorf(FED_EIO, "%s: %s", path, r ? strerror(errno) : "shorter than its size");
            goto done;
        }
        off += (size_t)r;
    }
    err = site_resid_parse(b, len, path, e, n);
done:
    close(fd);
    fed_free(b);
    return err;
}
