/* Tests of models/'s readers on small made-up inputs: the strict ustar reader (valid
 * archives, and every kind of malformed one with its code AND message), npm packages as
 * tarballs and folders, and TF.js graph models (weights across shard boundaries,
 * attributes, and malformed model.json: missing weights, wrong dtypes and shapes,
 * truncated shards, extra bytes, bad UTF-8, absurd sizes), with fail-the-Nth-allocation
 * over each. USE-lite itself, on the real files, is test_models_use_lite.c. */
#include "core/alloc.h"
#include "models/pkg.h"
#include "models/tar.h"
#include "models/tfjs.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- building archives ------------------------------------------------------------------ */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void zeros(buf *b, size_t n) {
    uint8_t z[512] = {0};
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        put(b, z, k);
        n -= k;
    }
}

static void checksum(uint8_t *h) {
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

/* One entry: a header (prefix only in POSIX form) and the data padded to 512. */
static uint8_t *entry(buf *b, const char *prefix, const char *name, char type, const void *data,
                      size_t n, bool gnu) {
    uint8_t h[512] = {0};
    memcpy(h, name, strlen(name) < 100 ? strlen(name) : 100);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)n);
    memcpy(h + 136, "00000000000", 12);
    h[156] = (uint8_t)type;
    memcpy(h + 257,
           gnu ? "ustar  \0"
               : "ustar\0"
                 "00",
           8);
    if (prefix) memcpy(h + 345, prefix, strlen(prefix));
    checksum(h);
    size_t at = b->n;
    put(b, h, sizeof h);
    put(b, data, n);
    zeros(b, (512 - n % 512) % 512);
    return b->p + at; /* valid until the next put */
}

static void end(buf *b) {
    zeros(b, 1024);
}

/* A valid archive: a directory, two files (one named through the POSIX prefix), one GNU. */
static buf sample_tar(void) {
    buf b = {0};
    static uint8_t big[600];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    entry(&b, NULL, "package/", '5', NULL, 0, false);
    entry(&b, NULL, "package/a.txt", '0', "hello", 5, false);
    entry(&b, "package/dist", "b.bin", '0', big, sizeof big, false);
    entry(&b, NULL, "package/c", '\0', "", 0, true);
    end(&b);
    return b;
}

TEST(tar_valid) {
    buf b = sample_tar();
    fed_tar *t = NULL;
    CHECK_OK(fed_tar_parse(&t, b.p, b.n, "t.tar"));
    if (t) {
        CHECK_SIZE(fed_tar_count(t), 3);
        CHECK_STR(fed_tar_at(t, 0)->name, "package/a.txt");
        CHECK_STR(fed_tar_at(t, 1)->name, "package/dist/b.bin");
        CHECK_STR(fed_tar_at(t, 2)->name, "package/c");
        CHECK(fed_tar_at(t, 3) == NULL);
        const fed_tar_entry *e = fed_tar_find(t, "package/a.txt");
        CHECK(e && e->size == 5 && memcmp(e->data, "hello", 5) == 0);
        e = fed_tar_find(t, "package/dist/b.bin");
        CHECK(e && e->size == 600 && e->data[599] == (uint8_t)(599 * 7));
        CHECK(fed_tar_find(t, "package/c") && fed_tar_find(t, "package/c")->size == 0);
        CHECK(fed_tar_find(t, "package") == NULL);
        CHECK(fed_tar_find(t, "package/") == NULL);
        CHECK(fed_tar_find(t, "package/b.bin") == NULL);
    }
    fed_tar_destroy(&t);
    fed_tar_destroy(&t);
    /* Trailing zeros after the end (tar's record padding) are fine; an empty archive too. */
    zeros(&b, 9216);
    CHECK_OK(fed_tar_parse(&t, b.p, b.n, "t.tar"));
    fed_tar_destroy(&t);
    uint8_t empty[1024] = {0};
    CHECK_OK(fed_tar_parse(&t, empty, sizeof empty, "e.tar"));
    CHECK(t && fed_tar_count(t) == 0);
    fed_tar_destroy(&t);
    free(b.p);
}

/* Parses b and checks the code and a piece of the message. */
static void tar_bad(const buf *b, fed_err code, const char *msg, int line) {
    fed_tar *t = NULL;
    fed_err e = fed_tar_parse(&t, b->p, b->n, "t.tar");
    if (e != code || !strstr(fed_errmsg(), msg) || t) {
        test_fail_(__FILE__, line);
        fprintf(stderr, "got %s \"%s\", expected %s \"...%s...\"\n", fed_errname(e), fed_errmsg(),
                fed_errname(code), msg);
    } else {
        test_passed_++;
    }
    fed_tar_destroy(&t);
}

/* An archive of one entry made by f, then the end. */
static buf one(const char *name, char type, const char *data, size_t n) {
    buf b = {0};
    entry(&b, NULL, name, type, data, n, false);
    end(&b);
    return b;
}

TEST(tar_malformed) {
    buf b = sample_tar();
    buf c = {0};
    /* A flipped byte: the checksum no longer matches. */
    put(&c, b.p, b.n);
    c.p[512 + 3] ^= 1;
    tar_bad(&c, FED_EFORMAT, "t.tar: header at byte 512: checksum", __LINE__);
    /* Truncated: inside a file's data, inside a header, before the end blocks. */
    c.n = 1024 + 100;
    memcpy(c.p, b.p, b.n);
    tar_bad(&c, FED_EFORMAT, "\"package/a.txt\" holds 5 bytes but the archive ends", __LINE__);
    c.n = 1024 + 512 + 200;
    tar_bad(&c, FED_EFORMAT, "no end-of-archive blocks after 1536 bytes", __LINE__);
    c.n = b.n - 1024;
    tar_bad(&c, FED_EFORMAT, "no end-of-archive blocks", __LINE__);
    c.n = b.n - 512;
    tar_bad(&c, FED_EFORMAT, "not followed by a second one", __LINE__);
    /* Something after the end. */
    c.n = b.n;
    put(&c, "x", 1);
    tar_bad(&c, FED_EFORMAT, "data after the end of the archive", __LINE__);
    free(c.p);
    free(b.p);
    /* Not a tar at all. */
    c = (buf){0};
    put(&c, "this is not a tar archive", 25);
    zeros(&c, 1024);
    tar_bad(&c, FED_EFORMAT, "checksum field is not octal", __LINE__);
    free(c.p);
    c = (buf){0};
    zeros(&c, 100);
    tar_bad(&c, FED_EFORMAT, "no end-of-archive blocks after 0 bytes", __LINE__);
    free(c.p);
    /* Entries that are not plain files. */
    static const struct {
        char type;
        const char *what;
    } kinds[] = {{'1', "a hard link"},
                 {'2', "a symbolic link"},
                 {'3', "a character device"},
                 {'4', "a block device"},
                 {'6', "a FIFO"},
                 {'7', "a contiguous file"},
                 {'x', "a pax extended header"},
                 {'g', "a pax global header"},
                 {'L', "a GNU long name"},
                 {'Z', "an unknown entry type"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        c = one("package/x", kinds[i].type, "", 0);
        tar_bad(&c, FED_EUNSUPPORTED, kinds[i].what, __LINE__);
        free(c.p);
    }
    /* Names. */
    static const struct {
        const char *name, *why;
    } names[] = {{"/etc/passwd", "an absolute name"},
                 {"package/../../x", "a \".\" or \"..\" path component"},
                 {"./package/x", "a \".\" or \"..\" path component"},
                 {"package//x", "an empty path component"},
                 {"package/x/", "an empty path component"},
                 {"package/\x01x", "a control character in the name"},
                 {"package/\xff\xfe", "a name that is not UTF-8"},
                 {"package/\xc0\xaf", "a name that is not UTF-8"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        c = one(names[i].name, '0', "ab", 2);
        tar_bad(&c, FED_EFORMAT, names[i].why, __LINE__);
        free(c.p);
    }
    c = (buf){0};
    entry(&c, NULL, "", '0', "ab", 2, false);
    end(&c);
    tar_bad(&c, FED_EFORMAT, "an empty name", __LINE__);
    free(c.p);
    /* The same name twice. */
    c = (buf){0};
    entry(&c, NULL, "package/a", '0', "1", 1, false);
    entry(&c, "package", "a", '0', "2", 1, false);
    end(&c);
    tar_bad(&c, FED_EFORMAT, "t.tar: \"package/a\" is in the archive twice", __LINE__);
    free(c.p);
    /* Sizes: base-256, not octal, absurd, a directory with bytes. */
    c = one("package/x", '0', "abc", 3);
    c.p[124] = (char)0x80;
    checksum(c.p);
    tar_bad(&c, FED_EUNSUPPORTED, "base-256 sizes are not supported", __LINE__);
    memcpy(c.p + 124, "00000000x03", 12);
    checksum(c.p);
    tar_bad(&c, FED_EFORMAT, "\"package/x\": the size field is not octal", __LINE__);
    memcpy(c.p + 124, "77777777777", 12);
    checksum(c.p);
    tar_bad(&c, FED_EFORMAT, "holds 8589934591 bytes but the archive ends", __LINE__);
    free(c.p);
    c = one("package/d", '5', "abc", 3);
    tar_bad(&c, FED_EFORMAT, "directory \"package/d\" has a size (3)", __LINE__);
    free(c.p);
    /* No ustar magic (a pre-POSIX v7 archive). */
    c = one("package/x", '0', "abc", 3);
    memset(c.p + 257, 0, 8);
    checksum(c.p);
    tar_bad(&c, FED_EFORMAT, "header at byte 0: no ustar magic", __LINE__);
    free(c.p);
}

TEST(tar_allocation_failures) {
    buf b = sample_tar();
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_tar *t = NULL;
        ALLOC_TRY(f, fed_tar_parse(&t, b.p, b.n, "t.tar"));
        if (f.failed)
            CHECK(t == NULL);
        else
            CHECK(t && fed_tar_count(t) == 3);
        fed_tar_destroy(&t);
    }
    free(b.p);
}

/* ---- packages in folders ------------------------------------------------------------------ */

static char tmpdir[64];

static void write_file(const char *rel, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) fprintf(stderr, "cannot write %s\n", path);
    if (f) fclose(f);
}

static void write_text(const char *rel, const char *text) {
    write_file(rel, text, strlen(text));
}

static const char *tmp(const char *rel) {
    static char path[4][512];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, sizeof path[0], "%s%s%s", tmpdir, rel[0] ? "/" : "", rel);
    return p;
}

/* The small TF.js model of these tests: w (2x3 float32) and k (int32 scalar) in two
 * shards split inside w's third float. */
static const char model_json[] =
    "{\"format\":\"graph-model\",\"generatedBy\":\"test\",\"modelTopology\":{\"node\":["
    "{\"name\":\"x\",\"op\":\"Placeholder\",\"attr\":{\"dtype\":{\"type\":1}}},"
    "{\"name\":\"w\",\"op\":\"Const\",\"attr\":{}},"
    "{\"name\":\"k\",\"op\":\"Const\"},"
    "{\"name\":\"y\",\"op\":\"MatMul\",\"input\":[\"x\",\"w\"],\"attr\":{"
    "\"transpose_a\":{\"b\":false},\"transpose_b\":{\"b\":true},"
    "\"strides\":{\"list\":{\"i\":[\"1\",\"2\",3]}},\"fmt\":{\"s\":[78,72,87,67]},"
    "\"fmt64\":{\"s\":\"TkhXQw==\"},\"n\":{\"i\":\"-7\"}}},"
    "{\"name\":\"z\",\"op\":\"Identity\",\"input\":[\"y:0\",\"^k\"],\"device\":\"/cpu:0\"}]},"
    "\"weightsManifest\":[{\"paths\":[\"group1-shard1of2\",\"group1-shard2of2\"],\"weights\":["
    "{\"name\":\"w\",\"shape\":[2,3],\"dtype\":\"float32\"},"
    "{\"name\":\"k\",\"shape\":[],\"dtype\":\"int32\"}]}]}";

static const float w_vals[6] = {1.5f, -2.0f, 0.25f, 3e-8f, -1e6f, 42.0f};

/* The 28 weight bytes (little-endian). */
static void weight_bytes(uint8_t out[28]) {
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &w_vals[i], 4);
        for (int k = 0; k < 4; k++) out[4 * i + k] = (uint8_t)(u >> (8 * k));
    }
    int32_t kv = -123456;
    uint32_t u = (uint32_t)kv;
    for (int k = 0; k < 4; k++) out[24 + k] = (uint8_t)(u >> (8 * k));
}

/* A package folder: package.json, dist/model.json (text) and the shards (first shard
 * bytes: split, total: n). */
static void write_pkg(const char *json, size_t split, size_t n) {
    uint8_t b[64] = {0};
    weight_bytes(b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/dist' && mkdir -p '%s/dist'", tmpdir, tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "cannot make %s/dist\n", tmpdir);
    write_text("package.json", "{\"name\":\"@t/model\",\"version\":\"1.2.3\"}");
    write_text("dist/model.json", json);
    write_file("dist/group1-shard1of2", b, split);
    write_file("dist/group1-shard2of2", b + split, n - split);
}

/* model_json with every `from` replaced by `to` (malloc'ed). */
static char *edit(const char *from, const char *to) {
    const char *at = strstr(model_json, from);
    if (!at) {
        fprintf(stderr, "edit: \"%s\" not in the model\n", from);
        abort();
    }
    size_t n = strlen(model_json) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, "%.*s%s%s", (int)(at - model_json), model_json, to, at + strlen(from));
    return s;
}

TEST(pkg_folders) {
    write_pkg(model_json, 10, 28);
    for (int at_dist = 0; at_dist < 2; at_dist++) {
        fed_pkg *p = NULL;
        CHECK_OK(fed_pkg_open(&p, at_dist ? tmp("dist") : tmp("")));
        if (!p) continue;
        const uint8_t *d = NULL;
        size_t n = 0;
        CHECK_OK(fed_pkg_read(p, "dist/model.json", &d, &n));
        CHECK(n == strlen(model_json) && d && memcmp(d, model_json, n) == 0);
        const uint8_t *again = NULL;
        CHECK_OK(fed_pkg_read(p, "dist/model.json", &again, &n));
        CHECK(again == d); /* read once, kept */
        CHECK_OK(fed_pkg_read(p, "package.json", &d, &n));
        CHECK(n > 10 && memcmp(d, "{\"name\"", 7) == 0);
        CHECK_ERR(fed_pkg_read(p, "dist/nothing.json", &d, &n), FED_ENOTFOUND);
        CHECK_CONTAINS(fed_errmsg(), "nothing.json: no such file");
        CHECK(d == NULL && n == 0);
        CHECK_ERR(fed_pkg_read(p, "dist/../../etc/passwd", &d, &n), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), "is not a file name inside the package");
        CHECK_ERR(fed_pkg_read(p, "/etc/passwd", &d, &n), FED_EINVAL);
        CHECK_ERR(fed_pkg_read(p, "dist", &d, &n), FED_EIO);
        CHECK_CONTAINS(fed_errmsg(), "not a regular file");
        char shown[600];
        CHECK_STR(fed_pkg_file_path(p, "dist/model.json", shown, sizeof shown),
                  tmp("dist/model.json"));
        CHECK(fed_pkg_tarball(p, &n) == NULL && n == 0);
        CHECK_STR(fed_pkg_path(p), at_dist ? tmp("dist") : tmp(""));
        fed_pkg_destroy(&p);
        fed_pkg_destroy(&p);
    }
    fed_pkg *p = NULL;
    CHECK_ERR(fed_pkg_open(&p, tmp("nowhere")), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "nowhere: No such file or directory");
    if (mkdir(tmp("empty"), 0755) != 0) fprintf(stderr, "mkdir failed\n");
    CHECK_ERR(fed_pkg_open(&p, tmp("empty")), FED_ENOTFOUND);
    CHECK_CONTAINS(fed_errmsg(), "empty: no model.json in it nor in its dist/ folder");
    CHECK(p == NULL);
    rmdir(tmp("empty"));
}

/* gzip of p[0..n) (malloc'ed). */
static uint8_t *gzip_of(const void *p, size_t n, size_t *out_n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    size_t cap = deflateBound(&zs, (uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (!out) abort();
    zs.next_in = (Bytef *)(uintptr_t)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

TEST(pkg_tarballs) {
    uint8_t w[28];
    weight_bytes(w);
    buf t = {0};
    entry(&t, NULL, "package/package.json", '0', "{}", 2, false);
    entry(&t, NULL, "package/dist/model.json", '0', model_json, strlen(model_json), false);
    entry(&t, NULL, "package/dist/group1-shard1of2", '0', w, 10, false);
    entry(&t, NULL, "package/dist/group1-shard2of2", '0', w + 10, 18, false);
    end(&t);
    size_t gn = 0;
    uint8_t *gz = gzip_of(t.p, t.n, &gn);
    write_file("m.tgz", gz, gn);
    write_file("m.tar", t.p, t.n);
    for (int plain = 0; plain < 2; plain++) {
        fed_pkg *p = NULL;
        CHECK_OK(fed_pkg_open(&p, tmp(plain ? "m.tar" : "m.tgz")));
        if (!p) continue;
        const uint8_t *d = NULL;
        size_t n = 0;
        CHECK_OK(fed_pkg_read(p, "dist/group1-shard2of2", &d, &n));
        CHECK(n == 18 && d && memcmp(d, w + 10, 18) == 0);
        CHECK_ERR(fed_pkg_read(p, "dist/vocab.json", &d, &n), FED_ENOTFOUND);
        CHECK_CONTAINS(fed_errmsg(), "m.t");
        CHECK_CONTAINS(fed_errmsg(), ": no package/dist/vocab.json in the tarball");
        const uint8_t *raw = fed_pkg_tarball(p, &n);
        CHECK(raw && n == (plain ? t.n : gn) && memcmp(raw, plain ? t.p : gz, n) == 0);
        char shown[600], want[600];
        snprintf(want, sizeof want, "%s:package/dist/model.json", tmp(plain ? "m.tar" : "m.tgz"));
        CHECK_STR(fed_pkg_file_path(p, "dist/model.json", shown, sizeof shown), want);
        fed_tfjs *g = NULL;
        CHECK_OK(fed_tfjs_read(&g, p));
        CHECK(g && fed_tfjs_num_weights(g) == 2);
        fed_tfjs_destroy(&g);
        fed_pkg_destroy(&p);
    }
    /* The same from memory. */
    fed_pkg *p = NULL;
    CHECK_OK(fed_pkg_from_memory(&p, gz, gn, "mem.tgz"));
    if (p) {
        const uint8_t *d = NULL;
        size_t n = 0;
        CHECK_OK(fed_pkg_read(p, "dist/group1-shard1of2", &d, &n));
        CHECK(n == 10 && d && memcmp(d, w, 10) == 0);
        CHECK_ERR(fed_pkg_read(p, "dist/x", &d, &n), FED_ENOTFOUND);
        CHECK_CONTAINS(fed_errmsg(), "mem.tgz: no package/dist/x in the tarball");
        CHECK(fed_pkg_tarball(p, &n) != NULL && n == gn);
    }
    fed_pkg_destroy(&p);
    CHECK_ERR(fed_pkg_from_memory(&p, gz, 0, "empty.tgz"), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "empty.tgz: no end-of-archive blocks after 0 bytes");
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_pkg *q = NULL;
        ALLOC_TRY(f, fed_pkg_from_memory(&q, gz, gn, "mem.tgz"));
        if (f.failed)
            CHECK(q == NULL);
        else
            CHECK(q != NULL);
        fed_pkg_destroy(&q);
    }
    /* Broken tarballs: truncated gzip, gzip of garbage, a tar cut short. */
    write_file("cut.tgz", gz, gn - 20);
    CHECK_ERR(fed_pkg_open(&p, tmp("cut.tgz")), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "cut.tgz: truncated gzip data");
    size_t jn = 0;
    uint8_t *junk = gzip_of("definitely not a tar archive", 28, &jn);
    write_file("junk.tgz", junk, jn);
    CHECK_ERR(fed_pkg_open(&p, tmp("junk.tgz")), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "junk.tgz: no end-of-archive blocks after 0 bytes");
    write_file("cut.tar", t.p, t.n - 1024 - 300);
    CHECK_ERR(fed_pkg_open(&p, tmp("cut.tar")), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "cut.tar: ");
    CHECK(p == NULL);
    free(junk);
    free(gz);
    free(t.p);
}

/* ---- TF.js graph models ------------------------------------------------------------------ */

TEST(tfjs_valid) {
    write_pkg(model_json, 10, 28);
    fed_pkg *p = NULL;
    fed_tfjs *g = NULL;
    CHECK_OK(fed_pkg_open(&p, tmp("dist")));
    CHECK_OK(fed_tfjs_read(&g, p));
    if (!g) {
        fed_pkg_destroy(&p);
        return;
    }
    CHECK_STR(fed_tfjs_what(g), tmp("dist/model.json"));
    CHECK_SIZE(fed_tfjs_num_weights(g), 2);
    const fed_tfjs_weight *w = fed_tfjs_weight_find(g, "w"), *k = fed_tfjs_weight_find(g, "k");
    CHECK(w && w == fed_tfjs_weight_at(g, 0) && k == fed_tfjs_weight_at(g, 1));
    CHECK(fed_tfjs_weight_find(g, "x") == NULL && fed_tfjs_weight_at(g, 2) == NULL);
    if (w && k) {
        CHECK(w->dtype == FED_TFJS_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3);
        CHECK_SIZE(w->numel, 6);
        for (size_t i = 0; i < 6; i++) CHECK(fed_tfjs_f32(w, i) == w_vals[i]); /* across shards */
        CHECK(k->dtype == FED_TFJS_I32 && k->ndim == 0 && k->numel == 1);
        CHECK_INT(fed_tfjs_i32(k, 0), -123456);
        CHECK_SIZE(w->group, 0);
    }
    size_t n = 0;
    uint8_t bytes[28];
    weight_bytes(bytes);
    CHECK_SIZE(fed_tfjs_num_groups(g), 1);
    const uint8_t *gb = fed_tfjs_group_bytes(g, 0, &n);
    CHECK(gb && n == 28 && memcmp(gb, bytes, 28) == 0);
    CHECK(fed_tfjs_group_bytes(g, 1, &n) == NULL && n == 0);
    CHECK_SIZE(fed_tfjs_num_nodes(g), 5);
    const fed_tfjs_node *y = fed_tfjs_node_find(g, "y"), *z = fed_tfjs_node_find(g, "z");
    CHECK(y && z && fed_tfjs_node_at(g, 3) == y && fed_tfjs_node_find(g, "q") == NULL);
    if (y && z) {
        CHECK_STR(y->op, "MatMul");
        CHECK(y->ninputs == 2 && strcmp(y->inputs[0], "x") == 0 && strcmp(y->inputs[1], "w") == 0);
        CHECK(z->ninputs == 2 && strcmp(z->inputs[0], "y:0") == 0 &&
              strcmp(z->inputs[1], "^k") == 0);
        CHECK_SIZE(fed_tfjs_consumers(g, y), 1);
        CHECK_SIZE(fed_tfjs_consumers(g, z), 0);
        CHECK_SIZE(fed_tfjs_consumers(g, fed_tfjs_node_find(g, "k")), 0); /* control only */
        bool b = true;
        CHECK(fed_tfjs_attr_bool(g, y, "transpose_a", &b) && !b);
        CHECK(fed_tfjs_attr_bool(g, y, "transpose_b", &b) && b);
        CHECK(!fed_tfjs_attr_bool(g, y, "n", &b) && !fed_tfjs_attr_bool(g, z, "transpose_a", &b));
        long long v = 0, list[2] = {0};
        CHECK(fed_tfjs_attr_int(g, y, "n", &v) && v == -7);
        CHECK(!fed_tfjs_attr_int(g, y, "transpose_a", &v));
        size_t count = 0;
        CHECK(fed_tfjs_attr_ints(g, y, "strides", list, 2, &count) && count == 3);
        CHECK(list[0] == 1 && list[1] == 2);
        char s[8];
        CHECK(fed_tfjs_attr_str(g, y, "fmt", s, sizeof s) && strcmp(s, "NHWC") == 0);
        CHECK(fed_tfjs_attr_str(g, y, "fmt64", s, sizeof s) && strcmp(s, "NHWC") == 0);
        CHECK(!fed_tfjs_attr_str(g, y, "fmt", s, 4)); /* does not fit */
        CHECK(!fed_tfjs_attr_str(g, y, "n", s, sizeof s));
    }
    fed_tfjs_destroy(&g);
    fed_tfjs_destroy(&g);
    fed_pkg_destroy(&p);
}

/* Reads the package written by write_pkg(json, split, n) and checks the code and message. */
static void tfjs_bad(const char *json, size_t split, size_t n, fed_err code, const char *msg,
                     int line) {
    write_pkg(json, split, n);
    fed_pkg *p = NULL;
    fed_tfjs *g = NULL;
    fed_err e = fed_pkg_open(&p, tmp("dist"));
    if (!e) e = fed_tfjs_read(&g, p);
    if (e != code || !strstr(fed_errmsg(), msg) || g) {
        test_fail_(__FILE__, line);
        fprintf(stderr, "got %s \"%s\", expected %s \"...%s...\"\n", fed_errname(e), fed_errmsg(),
                fed_errname(code), msg);
    } else {
        test_passed_++;
    }
    fed_tfjs_destroy(&g);
    fed_pkg_destroy(&p);
}

/* An edit of model_json that must fail with code and msg (the shards as usual). */
static void edit_bad(const char *from, const char *to, fed_err code, const char *msg, int line) {
    char *j = edit(from, to);
    tfjs_bad(j, 10, 28, code, msg, line);
    free(j);
}

TEST(tfjs_malformed) {
    /* Bytes: a truncated shard, extra bytes, a missing shard. */
    tfjs_bad(model_json, 10, 24, FED_EFORMAT,
             "weightsManifest[0]: the weights need more bytes than its 24 shard bytes: weight "
             "\"k\" (4 bytes) starts at byte 24 (a truncated shard?)",
             __LINE__);
    tfjs_bad(model_json, 5, 9, FED_EFORMAT, "weight \"w\" (24 bytes) starts at byte 0", __LINE__);
    tfjs_bad(model_json, 10, 36, FED_EFORMAT,
             "weightsManifest[0]: 8 bytes of shards left over after the 2 weights (28 bytes)",
             __LINE__);
    edit_bad("\"group1-shard2of2\"]", "\"group1-shard2of2\",\"group1-shard3of2\"]", FED_ENOTFOUND,
             "group1-shard3of2: no such file", __LINE__);
    /* Weights: missing, extra, dtypes, shapes, names, fields. */
    edit_bad("{\"name\":\"k\",\"op\":\"Const\"}", "{\"name\":\"k\",\"op\":\"Placeholder\"}",
             FED_EFORMAT, "weight \"k\" is not a Const node of the graph", __LINE__);
    edit_bad("\"op\":\"Const\"}", "\"op\":\"Const\"},{\"name\":\"k2\",\"op\":\"Const\"}",
             FED_EFORMAT, "Const node \"k2\" has no weight in the manifest", __LINE__);
    edit_bad("\"dtype\":\"int32\"", "\"dtype\":\"float16\"", FED_EUNSUPPORTED,
             "weight \"k\": dtype \"float16\" (only float32 and int32 are read)", __LINE__);
    edit_bad("\"dtype\":\"float32\"", "\"dtype\":7", FED_EFORMAT,
             "weight \"w\": field \"dtype\" must be a string", __LINE__);
    edit_bad("\"dtype\":\"int32\"}", "\"dtype\":\"int32\",\"quantization\":{\"dtype\":\"uint8\"}}",
             FED_EUNSUPPORTED, "weight \"k\" is quantized", __LINE__);
    edit_bad("\"dtype\":\"int32\"}", "\"dtype\":\"int32\",\"colour\":1}", FED_EFORMAT,
             "weight \"k\": unknown field \"colour\"", __LINE__);
    edit_bad("[2,3]", "[3,3]", FED_EFORMAT, "the weights need more bytes", __LINE__);
    edit_bad("[2,3]", "[2,-3]", FED_EFORMAT,
             "weight \"w\": shape[1] must be a non-negative integer", __LINE__);
    edit_bad("[2,3]", "[2,1.5]", FED_EFORMAT, "shape[1] must be", __LINE__);
    edit_bad("[2,3]", "[\"2\",3]", FED_EFORMAT, "shape[0] must be", __LINE__);
    edit_bad("[2,3]", "[4294967296,4294967296]", FED_EFORMAT,
             "shape[1] must be a non-negative integer (and the product below 2^62)", __LINE__);
    edit_bad("[2,3]", "[1e300,1]", FED_EFORMAT, "shape[0] must be", __LINE__);
    edit_bad("[2,3]", "[1,1,1,1,1,1,1,2,3]", FED_EUNSUPPORTED, "weight \"w\": 9 dimensions",
             __LINE__);
    edit_bad("[2,3]", "{}", FED_EFORMAT, "field \"shape\" must be an array", __LINE__);
    edit_bad("{\"name\":\"k\",\"shape\"", "{\"name\":\"w\",\"shape\"", FED_EFORMAT,
             "two weights are called \"w\"", __LINE__);
    edit_bad("{\"name\":\"k\",\"shape\"", "{\"shape\"", FED_EFORMAT,
             "weightsManifest[0]: a weight without a name", __LINE__);
    edit_bad("[\"group1-shard1of2\",", "[\"../group1-shard1of2\",", FED_EFORMAT,
             "shard path \"../group1-shard1of2\" is not a plain file name", __LINE__);
    edit_bad("[\"group1-shard1of2\",", "[7,", FED_EFORMAT, "shard path (not a string)", __LINE__);
    edit_bad("\"paths\":[\"group1-shard1of2\",\"group1-shard2of2\"]", "\"paths\":[]", FED_EFORMAT,
             "\"paths\" must be a non-empty array", __LINE__);
    /* The graph: names, inputs, fields. */
    edit_bad("[\"x\",\"w\"]", "[\"x\",\"v\"]", FED_EFORMAT, "node \"y\": input \"v\" is not a node",
             __LINE__);
    edit_bad("[\"y:0\",\"^k\"]", "[\"y:0\",\"^kk\"]", FED_EFORMAT, "input \"^kk\" is not a node",
             __LINE__);
    edit_bad("{\"name\":\"z\"", "{\"name\":\"y\"", FED_EFORMAT, "two nodes are called \"y\"",
             __LINE__);
    edit_bad("\"op\":\"Identity\"", "\"op\":\"\"", FED_EFORMAT, "node \"z\" has no op", __LINE__);
    edit_bad("{\"name\":\"z\",", "{", FED_EFORMAT, "node 4 has no name", __LINE__);
    edit_bad("\"device\":", "\"colour\":", FED_EFORMAT, "node \"z\": unknown field \"colour\"",
             __LINE__);
    edit_bad("[\"y:0\",\"^k\"]", "\"y\"", FED_EFORMAT, "\"input\" must be an array", __LINE__);
    /* The file: structure, format, JSON, UTF-8. */
    edit_bad("\"format\":\"graph-model\"", "\"format\":\"layers-model\"", FED_EUNSUPPORTED,
             "format \"layers-model\", not a TF.js graph model", __LINE__);
    edit_bad("\"weightsManifest\"", "\"weightsManifesto\"", FED_EFORMAT,
             "no \"weightsManifest\" (not a TF.js graph model)", __LINE__);
    edit_bad("\"modelTopology\":{\"node\"", "\"modelTopology\":{\"nodes\"", FED_EFORMAT,
             "\"modelTopology\" must be an object with a \"node\" array", __LINE__);
    edit_bad("\"weightsManifest\":[", "\"weightsManifest\":[7,", FED_EFORMAT,
             "every weightsManifest entry must be an object", __LINE__);
    char *cut = edit(model_json, model_json);
    cut[strlen(cut) - 5] = '\0';
    tfjs_bad(cut, 10, 28, FED_EFORMAT, "model.json: not valid JSON", __LINE__);
    free(cut);
    edit_bad("\"generatedBy\":\"test\"", "\"generatedBy\":\"t\xc3\x28st\"", FED_EFORMAT,
             "model.json: byte 40 is not valid UTF-8", __LINE__);
    tfjs_bad("[1,2,3]", 10, 28, FED_EFORMAT, "model.json: not a JSON object", __LINE__);
    tfjs_bad("", 10, 28, FED_EFORMAT, "model.json: not valid JSON", __LINE__);
}

static fed_err open_read(fed_pkg **p, fed_tfjs **g, const char *path) {
    fed_err e = fed_pkg_open(p, path);
    return e ? e : fed_tfjs_read(g, *p);
}

TEST(tfjs_allocation_failures) {
    write_pkg(model_json, 10, 28);
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_pkg *p = NULL;
        fed_tfjs *g = NULL;
        ALLOC_TRY(f, open_read(&p, &g, tmp("dist")));
        if (f.failed)
            CHECK(g == NULL);
        else
            CHECK(g && fed_tfjs_num_weights(g) == 2 && fed_tfjs_num_nodes(g) == 5);
        fed_tfjs_destroy(&g);
        fed_pkg_destroy(&p);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fedtune-models-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(tar_valid);
    RUN(tar_malformed);
    RUN(tar_allocation_failures);
    RUN(pkg_folders);
    RUN(pkg_tarballs);
    RUN(tfjs_valid);
    RUN(tfjs_malformed);
    RUN(tfjs_allocation_failures);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report();
}
