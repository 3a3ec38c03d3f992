/* Tests of safetensors files: exact bytes of the writer, F16/BF16 decoding, every kind
 * of malformed file (code AND message), loading weights into models by name with its
 * errors, self-describing model files, atomic writes under I/O failure, and
 * fail-the-Nth-allocation over the parser, the writer and fed_model_load. */
#include "core/alloc_internal.h"
#include "core/arch.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "tests/test.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

/* tmpdir/name into buf. */
static const char *tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmpdir, name);
    return buf;
}

/* Number of entries in tmpdir (temporary files left behind show up here). */
static int dir_entries(void) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static long read_all(const char *path, unsigned char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return (long)n;
}

static void write_all(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (fwrite(buf, 1, n, f) != n) fprintf(stderr, "short write to %s\n", path);
    fclose(f);
}

static fed_model *model_from(const char *spec) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) == FED_OK && fed_model_new(&m, a) != FED_OK) m = NULL;
    fed_arch_destroy(&a);
    return m;
}

/* A file by hand: 8-byte length of header, header, then data_len bytes 0, 1, 2, ... */
typedef struct handmade {
    unsigned char bytes[1024];
    size_t len;
} handmade;

static handmade make_file(const char *header, size_t data_len) {
    handmade h;
    size_t hl = strlen(header);
    for (int i = 0; i < 8; i++) h.bytes[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(h.bytes + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) h.bytes[8 + hl + i] = (unsigned char)i;
    h.len = 8 + hl + data_len;
    return h;
}

/* A malformed file must fail with code and a message holding msg_part. */
static void bad_bytes(const void *buf, size_t len, fed_err code, const char *msg_part) {
    fed_st_file *f = NULL;
    fed_errclear();
    CHECK_ERR(fed_st_parse(&f, buf, len, "m.safetensors"), code);
    CHECK(f == NULL);
    CHECK_CONTAINS(fed_errmsg(), msg_part);
    CHECK_CONTAINS(fed_errmsg(), "m.safetensors: ");
    fed_st_close(&f);
}

static void bad_file(const char *header, size_t data_len, fed_err code, const char *msg_part) {
    handmade h = make_file(header, data_len);
    bad_bytes(h.bytes, h.len, code, msg_part);
}

#define T(name, dtype, shape, b, e)                                                                \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

TEST(metadata_list) {
    fed_meta *m = NULL;
    CHECK_OK(fed_meta_new(&m));
    if (!m) return;
    CHECK_SIZE(fed_meta_count(m), 0);
    CHECK(fed_meta_get(m, "a") == NULL);
    for (int i = 0; i < 20; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        CHECK_OK(fed_meta_set(m, k, v));
    }
    CHECK_OK(fed_meta_set(m, "k3", "three"));
    CHECK_SIZE(fed_meta_count(m), 20);
    CHECK_STR(fed_meta_get(m, "k3"), "three");
    CHECK_STR(fed_meta_key(m, 19), "k19");
    CHECK_STR(fed_meta_value(m, 19), "v19");
    CHECK_STR(fed_meta_value(m, 3), "three");
    CHECK(fed_meta_key(m, 20) == NULL);
    fed_meta_unset(m, "k3");
    fed_meta_unset(m, "absent");
    CHECK_SIZE(fed_meta_count(m), 19);
    CHECK(fed_meta_get(m, "k3") == NULL);
    CHECK_STR(fed_meta_key(m, 3), "k4"); /* order kept */
    CHECK_STR(fed_meta_key(m, 18), "k19");
    fed_meta_destroy(&m);
    CHECK(m == NULL);
    fed_meta_destroy(&m);
    CHECK_STR(fed_st_dtype_name(FED_ST_BF16), "BF16");
}

/* The writer's bytes, one by one: length, header with padding, little-endian floats. */
TEST(exact_bytes_of_a_tiny_file) {
    const float w[2] = {1.0f, -2.0f}, s = 0.5f;
    const size_t wshape[1] = {2};
    fed_st_entry e[2] = {{"w", 1, wshape, w}, {"s", 0, NULL, &s}};
    fed_meta *meta = NULL;
    CHECK_OK(fed_meta_new(&meta));
    if (!meta) return;
    CHECK_OK(fed_meta_set(meta, "a", "b"));
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(fed_st_encode(&buf, &len, e, 2, meta));
    const char *header = "{\"__metadata__\":{\"a\":\"b\"},"
                         "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}    ";
    static const unsigned char len_bytes[8] = {136, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char data[12] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x3f};
    CHECK_SIZE(strlen(header), 136);
    CHECK_SIZE(len, 8 + 136 + 12);
    if (buf && len == 156) {
        const unsigned char *b = buf;
        CHECK_MEM(b, len_bytes, 8);
        CHECK_MEM(b + 8, header, 136);
        CHECK_MEM(b + 144, data, 12);
    }
    /* The file on disk holds the same bytes, and reads back. */
    char path[128];
    unsigned char disk[256];
    CHECK_OK(fed_st_write(tmp_path(path, sizeof path, "tiny.safetensors"), e, 2, meta));
    CHECK_INT(read_all(path, disk, sizeof disk), 156);
    if (buf) CHECK_MEM(disk, buf, 156);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    fed_st_file *f = NULL;
    CHECK_OK(fed_st_read(&f, path));
    if (f) {
        CHECK_SIZE(fed_st_count(f), 2);
        CHECK_STR(fed_st_at(f, 0)->name, "w");
        CHECK_STR(fed_st_at(f, 1)->name, "s");
        CHECK_INT(fed_st_at(f, 1)->ndim, 0);
        CHECK_SIZE(fed_st_at(f, 1)->numel, 1);
        CHECK_STR(fed_meta_get(fed_st_meta(f), "a"), "b");
        CHECK_STR(fed_st_what(f), path);
        float got[2];
        fed_st_copy_f32(f, fed_st_find(f, "w"), got);
        CHECK(got[0] == 1.0f && got[1] == -2.0f);
        fed_st_copy_f32(f, fed_st_find(f, "s"), got);
        CHECK(got[0] == 0.5f);
        CHECK(fed_st_find(f, "x") == NULL);
    }
    fed_st_close(&f);
    fed_free(buf);

    /* No tensors, no metadata: "{}" padded to 8, as the reference writes it. */
    CHECK_OK(fed_st_encode(&buf, &len, NULL, 0, NULL));
    CHECK_SIZE(len, 16);
    if (buf && len == 16) CHECK_MEM(buf, "\x08\0\0\0\0\0\0\0{}      ", 16);
    CHECK_OK(fed_st_parse(&f, buf, len, "empty"));
    if (f) CHECK_SIZE(fed_st_count(f), 0);
    fed_st_close(&f);
    fed_free(buf);

    /* Names and values are JSON-escaped. */
    CHECK_OK(fed_meta_set(meta, "q\"\\", "line\nfeed \xc3\xa9"));
    fed_st_entry odd = {"a \"quoted\" \x01", 1, wshape, w};
    CHECK_OK(fed_st_encode(&buf, &len, &odd, 1, meta));
    CHECK_OK(fed_st_parse(&f, buf, len, "escaped"));
    if (f) {
        CHECK(fed_st_find(f, "a \"quoted\" \x01") != NULL);
        CHECK_STR(fed_meta_get(fed_st_meta(f), "q\"\\"), "line\nfeed \xc3\xa9");
    }
    fed_st_close(&f);
    fed_free(buf);
    fed_meta_destroy(&meta);
}

/* A file written by the reference implementation (its own unit test's bytes). */
TEST(reads_the_reference_serialization) {
    static const unsigned char ref[] = {
        64, 0,  0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,
        34, 58, 123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,
        44, 34, 115, 104, 97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,
        44, 34, 100, 97,  116, 97,  95,  111, 102, 102, 115, 101, 116, 115, 34,  58,
        91, 48, 44,  50,  52,  93,  125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
        0,  0,  0,   64,  0,   0,   64,  64,  0,   0,   128, 64,  0,   0,   160, 64};
    fed_st_file *f = NULL;
    CHECK_OK(fed_st_parse(&f, ref, sizeof ref, "ref"));
    if (!f) return;
    const fed_st_tensor *t = fed_st_find(f, "attn.0");
    CHECK(t != NULL);
    if (t) {
        CHECK_INT(t->ndim, 3);
        CHECK_SIZE(t->shape[2], 3);
        CHECK_SIZE(t->numel, 6);
        float v[6];
        fed_st_copy_f32(f, t, v);
        for (int i = 0; i < 6; i++) CHECK(v[i] == (float)i);
    }
    CHECK_SIZE(fed_meta_count(fed_st_meta(f)), 0);
    fed_st_close(&f);
}

/* Value of a binary16 by the definition, for the exhaustive check. */
static double half_by_definition(unsigned h) {
    unsigned s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024 + m), (int)e - 25);
    return s ? -v : v;
}

TEST(half_and_bfloat16_decoding) {
    static const uint16_t half[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x0400,
                                    0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x3555};
    static const uint16_t bf[] = {0x3F80, 0x4049, 0xFF80, 0x7FC0, 0x0001, 0xC2F7};
    const char *header = "{" T("h", "F16", "[12]", 0, 24) "," T("b", "BF16", "[2,3]", 24, 36) "}";
    handmade file = make_file(header, 36);
    unsigned char *data = file.bytes + 8 + strlen(header);
    for (int i = 0; i < 12; i++) {
        data[2 * i] = (unsigned char)(half[i] & 0xff);
        data[2 * i + 1] = (unsigned char)(half[i] >> 8);
    }
    for (int i = 0; i < 6; i++) {
        data[24 + 2 * i] = (unsigned char)(bf[i] & 0xff);
        data[24 + 2 * i + 1] = (unsigned char)(bf[i] >> 8);
    }
    fed_st_file *f = NULL;
    CHECK_OK(fed_st_parse(&f, file.bytes, file.len, "halves"));
    if (!f) return;
    float h[12], b[6];
    const fed_st_tensor *th = fed_st_find(f, "h"), *tb = fed_st_find(f, "b");
    CHECK(th && tb && th->dtype == FED_ST_F16 && tb->dtype == FED_ST_BF16);
    if (!th || !tb) return;
    fed_st_copy_f32(f, th, h);
    fed_st_copy_f32(f, tb, b);
    CHECK(h[0] == 1.0f);
    CHECK(h[1] == -2.0f);
    CHECK(h[2] == 65504.0f);
    CHECK(h[3] == 0x1p-24f);              /* smallest subnormal */
    CHECK(h[4] == 1023.0f * 0x1p-24f);    /* largest subnormal */
    CHECK(h[5] == 0x1p-14f);              /* smallest normal */
    CHECK(h[6] == 0.0f && signbit(h[6])); /* -0 */
    CHECK(isinf(h[7]) && h[7] > 0.0f);
    CHECK(isinf(h[8]) && h[8] < 0.0f);
    CHECK(isnan(h[9]) && isnan(h[10])); /* quiet and signalling NaN */
    CHECK(h[11] == 0.333251953125f);
    CHECK(b[0] == 1.0f);
    CHECK(b[1] == 3.140625f);
    CHECK(isinf(b[2]) && b[2] < 0.0f);
    CHECK(isnan(b[3]));
    CHECK(b[4] == 0x1p-133f); /* the smallest bfloat16 subnormal */
    CHECK(b[5] == -123.5f);
    fed_st_close(&f);

    /* All 65536 halves against the definition (NaNs: any NaN). */
    static unsigned char big[8 + 128 + 131072];
    const char *hh = "{" T("all", "F16", "[65536]", 0, 131072) "}";
    size_t hl = strlen(hh);
    memset(big, 0, 8);
    big[0] = (unsigned char)hl;
    memcpy(big + 8, hh, hl);
    for (unsigned i = 0; i < 65536; i++) {
        big[8 + hl + 2 * i] = (unsigned char)(i & 0xff);
        big[8 + hl + 2 * i + 1] = (unsigned char)(i >> 8);
    }
    CHECK_OK(fed_st_parse(&f, big, 8 + hl + 131072, "all halves"));
    if (!f) return;
    float *all = fed_mallocarray(65536, sizeof(float));
    if (all) {
        fed_st_copy_f32(f, fed_st_at(f, 0), all);
        int wrong = 0;
        for (unsigned i = 0; i < 65536; i++) {
            bool is_nan = ((i >> 10) & 31) == 31 && (i & 1023);
            bool is_inf = ((i >> 10) & 31) == 31 && !(i & 1023);
            if (is_nan)
                wrong += !isnan(all[i]);
            else if (is_inf)
                wrong += !isinf(all[i]) || (signbit(all[i]) != 0) != ((i >> 15) != 0);
            else
                wrong += (double)all[i] != half_by_definition(i) ||
                         (signbit(all[i]) != 0) != ((i >> 15) != 0);
        }
        CHECK_INT(wrong, 0);
    }
    fed_free(all);
    fed_st_close(&f);
}

TEST(valid_edge_cases) {
    fed_st_file *f = NULL;
    /* Entries out of order in the header come back sorted by offset; zero-size tensors
     * are fine; trailing spaces after the JSON are the reference writer's padding. */
    handmade h =
        make_file("{" T("b", "F32", "[2]", 8, 16) "," T("empty", "F16", "[0,5]", 16, 16) "," T(
                      "a", "F32", "[1,2]", 0, 8) ",\"__metadata__\":{\"k\":\"v\"}}  \n",
                  16);
    CHECK_OK(fed_st_parse(&f, h.bytes, h.len, "sorted"));
    if (f) {
        CHECK_SIZE(fed_st_count(f), 3);
        CHECK_STR(fed_st_at(f, 0)->name, "a");
        CHECK_STR(fed_st_at(f, 1)->name, "b");
        CHECK_STR(fed_st_at(f, 2)->name, "empty");
        CHECK_SIZE(fed_st_find(f, "empty")->numel, 0);
        CHECK_SIZE(fed_st_find(f, "b")->begin, 8);
        CHECK_STR(fed_meta_get(fed_st_meta(f), "k"), "v");
        /* Values are read as little-endian bytes: 0x03020100 for "a"[0]. */
        float v[2];
        fed_st_copy_f32(f, fed_st_find(f, "a"), v);
        uint32_t u;
        memcpy(&u, &v[0], 4);
        CHECK_SIZE(u, 0x03020100u);
    }
    fed_st_close(&f);
    /* Any name length and character is fine for the generic reader. */
    char longname[300], header[600];
    memset(longname, 'x', 200);
    longname[200] = '\0';
    snprintf(header, sizeof header,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", longname);
    h = make_file(header, 4);
    CHECK_OK(fed_st_parse(&f, h.bytes, h.len, "long"));
    if (f) CHECK(fed_st_find(f, longname) != NULL);
    fed_st_close(&f);
}

TEST(malformed_files) {
    /* Framing. */
    bad_bytes("", 0, FED_EFORMAT, "0 bytes, too short");
    bad_bytes("\x02\0\0\0\0", 5, FED_EFORMAT, "5 bytes, too short");
    handmade h = make_file("{}", 10);
    h.bytes[0] = 100;
    bad_bytes(h.bytes, h.len, FED_EFORMAT, "header length 100 runs past the end of the file");
    h.bytes[0] = 0;
    h.bytes[7] = 0x80; /* 2^63 */
    bad_bytes(h.bytes, h.len, FED_EFORMAT,
              "header length 9223372036854775808 exceeds the limit of 100000000 bytes");
    bad_file("", 0, FED_EFORMAT, "header is not a JSON object");
    bad_file("[1,2]", 0, FED_EFORMAT, "header is not a JSON object");
    bad_file(" {}", 0, FED_EFORMAT, "header is not a JSON object");
    bad_file("{\"a\":", 0, FED_EFORMAT, "header is not valid JSON");
    bad_file("{not json}", 0, FED_EFORMAT, "header is not valid JSON");
    bad_file("{} {}", 0, FED_EFORMAT, "characters after the JSON object at offset 3");
    bad_file("{\"\xff\":1}", 0, FED_EFORMAT, "invalid UTF-8 at offset 2");
    bad_file("{\"\xed\xa0\x80\":1}", 0, FED_EFORMAT, "invalid UTF-8"); /* a surrogate */
    bad_file("{\"a\x01\":1}", 0, FED_EFORMAT, "control character at offset 3");
    bad_file("{\"a\\u0000b\":1}", 0, FED_EFORMAT, "\\u0000 at offset 3");

    /* Entries. */
    bad_file("{\"w\":3}", 0, FED_EFORMAT, "tensor \"w\": must be an object");
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, FED_EFORMAT,
             "tensor \"w\": missing field \"data_offsets\"");
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
             FED_EFORMAT, "tensor \"w\": unknown field \"x\"");
    bad_file("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             4, FED_EFORMAT, "tensor \"w\": duplicate field \"dtype\"");
    bad_file("{" T("w", "F31", "[1]", 0, 4) "}", 4, FED_EFORMAT,
             "tensor \"w\": unknown dtype \"F31\"");
    bad_file("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, FED_EFORMAT,
             "tensor \"w\": field \"dtype\" must be a string");
    bad_file("{" T("ids", "I64", "[1]", 0, 8) "}", 8, FED_EUNSUPPORTED,
             "tensor \"ids\": dtype I64 is not supported");
    bad_file("{" T("d", "F64", "[1]", 0, 8) "}", 8, FED_EUNSUPPORTED, "dtype F64");
    bad_file("{" T("w", "F32", "[-1]", 0, 4) "}", 4, FED_EFORMAT,
             "tensor \"w\": shape dimension 0 must be an integer in [0, 2^53)");
    bad_file("{" T("w", "F32", "[1,2.5]", 0, 4) "}", 4, FED_EFORMAT,
             "tensor \"w\": shape dimension 1 must be an integer");
    bad_file("{" T("w", "F32", "[\"1\"]", 0, 4) "}", 4, FED_EFORMAT, "shape dimension 0");
    bad_file("{" T("w", "F32", "[9007199254740993]", 0, 4) "}", 4, FED_EFORMAT,
             "shape dimension 0");
    bad_file("{" T("w", "F32", "[4294967296,4294967296]", 0, 4) "}", 4, FED_EFORMAT,
             "tensor \"w\": shape [4294967296, 4294967296] overflows 64 bits");
    bad_file("{" T("w", "F32", "[4611686018427387,4096]", 0, 4) "}", 4, FED_EFORMAT,
             "overflows 64 bits"); /* elements fit, bytes do not */
    bad_file("{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, FED_EUNSUPPORTED,
             "tensor \"w\": more than 8 dimensions");
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4, FED_EFORMAT,
             "field \"shape\" must be an array");
    bad_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, FED_EFORMAT,
             "tensor \"w\": field \"data_offsets\" must be two integers");
    bad_file("{" T("w", "F32", "[1]", 0, -4) "}", 4, FED_EFORMAT, "field \"data_offsets\"");
    bad_file("{" T("w", "F32", "[1]", 8, 4) "}", 8, FED_EFORMAT,
             "data_offsets [8, 4) end before they begin");
    bad_file("{" T("w", "F32", "[4]", 0, 16) "}", 8, FED_EFORMAT,
             "tensor \"w\": data_offsets [0, 16) run past the data section (8 bytes)");
    bad_file("{" T("0.weight", "F32", "[4,8]", 0, 96) "}", 96, FED_EFORMAT,
             "m.safetensors: tensor \"0.weight\": data_offsets [0, 96) but shape [4, 8] F32 "
             "needs 128 bytes");
    bad_file("{" T("h", "F16", "[3]", 0, 4) "}", 4, FED_EFORMAT, "shape [3] F16 needs 6 bytes");

    /* Layout of the data section. */
    bad_file("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12, FED_EFORMAT,
             "tensor \"b\": data_offsets [4, 12) overlap tensor \"a\" (which ends at 8)");
    bad_file("{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 12, 20) "}", 20, FED_EFORMAT,
             "tensor \"b\": data_offsets [12, 20) leave a hole: bytes [8, 12)");
    bad_file("{" T("b", "F32", "[2]", 4, 12) "}", 12, FED_EFORMAT, "bytes [0, 4) belong to no");
    bad_file("{" T("a", "F32", "[2]", 0, 8) "}", 12, FED_EFORMAT,
             "4 trailing bytes after the last tensor");
    bad_file("{}", 1, FED_EFORMAT, "1 trailing bytes");
    bad_file("{" T("a", "F32", "[2]", 0, 8) "," T("a", "F32", "[2]", 8, 16) "}", 16, FED_EFORMAT,
             "duplicate tensor \"a\"");

    /* Metadata. */
    bad_file("{\"__metadata__\":{\"k\":1}}", 0, FED_EFORMAT,
             "__metadata__ \"k\": value must be a string");
    bad_file("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, FED_EFORMAT, "__metadata__ \"k\"");
    bad_file("{\"__metadata__\":[\"k\"]}", 0, FED_EFORMAT, "\"__metadata__\" must be an object");
    bad_file("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, FED_EFORMAT,
             "__metadata__: duplicate key \"k\"");
    bad_file("{\"__metadata__\":{},\"__metadata__\":{}}", 0, FED_EFORMAT,
             "duplicate \"__metadata__\"");
}

static const char *mlp_spec = "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3},"
                              "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":2}]}";

/* Loads entries into m and checks code, message and (on failure) that m is unchanged. */
static void load_case(fed_model *m, const fed_st_entry *e, size_t n, unsigned flags, fed_err code,
                      const char *msg_part) {
    size_t bytes = fed_model_num_params(m) * sizeof(float);
    float *before = fed_malloc(bytes);
    void *buf = NULL;
    size_t len = 0;
    fed_st_file *f = NULL;
    if (!before) return;
    memcpy(before, fed_model_params(m), bytes);
    CHECK_OK(fed_st_encode(&buf, &len, e, n, NULL));
    CHECK_OK(fed_st_parse(&f, buf, len, "m.safetensors"));
    if (f) {
        fed_errclear();
        fed_err err = fed_model_load_weights(m, f, flags);
        CHECK_ERR(err, code);
        if (msg_part) CHECK_CONTAINS(fed_errmsg(), msg_part);
        if (err) CHECK_MEM(fed_model_params(m), before, bytes);
    }
    fed_st_close(&f);
    fed_free(buf);
    fed_free(before);
}

TEST(load_weights_by_name) {
    fed_model *m = model_from(mlp_spec);
    if (!m) return;
    fed_model_init(m, 3);
    float w0[12], b0[3], w2[6], b2[2], x[12];
    for (int i = 0; i < 12; i++) w0[i] = (float)i + 0.25f;
    for (int i = 0; i < 3; i++) b0[i] = -(float)i;
    for (int i = 0; i < 6; i++) w2[i] = 100.0f + (float)i;
    for (int i = 0; i < 2; i++) b2[i] = 7.0f + (float)i;
    for (int i = 0; i < 12; i++) x[i] = 1.0f;
    const size_t s34[2] = {3, 4}, s43[2] = {4, 3}, s3[1] = {3}, s23[2] = {2, 3}, s2[1] = {2};
    const fed_st_entry all[4] = {{"2.bias", 1, s2, b2},
                                 {"0.weight", 2, s34, w0},
                                 {"0.bias", 1, s3, b0},
                                 {"2.weight", 2, s23, w2}};

    /* A missing tensor, with and without FED_LOAD_ALLOW_MISSING. */
    load_case(
        m, all + 1, 3, FED_LOAD_STRICT, FED_ENOTFOUND,
        "m.safetensors: tensor \"2.bias\" missing (layer 2 (linear) of the model expects it)");
    float keep = fed_model_params(m)[fed_model_find(m, "2.bias")->offset];
    load_case(m, all + 1, 3, FED_LOAD_ALLOW_MISSING, FED_OK, NULL);
    CHECK(fed_model_params(m)[fed_model_find(m, "2.bias")->offset] == keep);
    CHECK(fed_model_params(m)[fed_model_find(m, "2.weight")->offset + 5] == 105.0f);
    fed_model_init(m, 3);

    /* An extra tensor, with and without FED_LOAD_ALLOW_EXTRA. */
    fed_st_entry extra[5];
    memcpy(extra, all, sizeof all);
    extra[4] = (fed_st_entry){"9.weight", 2, s34, x};
    load_case(m, extra, 5, FED_LOAD_STRICT, FED_EFORMAT,
              "m.safetensors: tensor \"9.weight\" is not part of the model");
    load_case(m, extra, 5, FED_LOAD_ALLOW_EXTRA, FED_OK, NULL);
    CHECK(fed_model_params(m)[fed_model_find(m, "0.weight")->offset + 11] == 11.25f);
    fed_model_init(m, 3);

    /* A shape mismatch names both shapes. */
    fed_st_entry wrong[4];
    memcpy(wrong, all, sizeof all);
    wrong[1].shape = s43;
    load_case(m, wrong, 4, FED_LOAD_ALLOW_EXTRA | FED_LOAD_ALLOW_MISSING, FED_ESHAPE,
              "m.safetensors: tensor \"0.weight\": the file has shape [4, 3], the model [3, 4]");
    wrong[1].shape = s34;
    wrong[3].ndim = 1; /* [2] instead of [2, 3] */
    load_case(m, wrong, 4, FED_LOAD_STRICT, FED_ESHAPE, "the file has shape [2], the model [2, 3]");

    /* Everything present: the values land where the table says. */
    load_case(m, all, 4, FED_LOAD_STRICT, FED_OK, NULL);
    const float *p = fed_model_params(m);
    CHECK(p[fed_model_find(m, "0.weight")->offset + 5] == 5.25f);
    CHECK(p[fed_model_find(m, "0.bias")->offset + 2] == -2.0f);
    CHECK(p[fed_model_find(m, "2.bias")->offset + 1] == 8.0f);
    fed_model_destroy(&m);
}

TEST(load_weights_converts_half_precision) {
    fed_model *m = model_from("{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":1}]}");
    if (!m) return;
    /* 0.weight F16 [1, 2] = {1.0, -2.0}, 0.bias BF16 [1] = {3.140625}. */
    handmade h = make_file(
        "{" T("0.weight", "F16", "[1,2]", 0, 4) "," T("0.bias", "BF16", "[1]", 4, 6) "}", 6);
    unsigned char *d = h.bytes + h.len - 6;
    d[0] = 0x00, d[1] = 0x3C, d[2] = 0x00, d[3] = 0xC0, d[4] = 0x49, d[5] = 0x40;
    fed_st_file *f = NULL;
    CHECK_OK(fed_st_parse(&f, h.bytes, h.len, "half"));
    if (f) {
        CHECK_OK(fed_model_load_weights(m, f, FED_LOAD_STRICT));
        const float *p = fed_model_params(m);
        CHECK(p[0] == 1.0f && p[1] == -2.0f && p[2] == 3.140625f);
    }
    fed_st_close(&f);
    fed_model_destroy(&m);
}

static const char *cnn_spec =
    "{\"input\":[2,6,6],\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"k\":3,\"pad\":1},"
    "{\"type\":\"gelu\"},{\"type\":\"maxpool2d\",\"k\":2},{\"type\":\"flatten\"},"
    "{\"type\":\"layernorm\"},{\"type\":\"dropout\",\"p\":0.25},"
    "{\"type\":\"linear\",\"out\":4,\"init\":\"torch\"}]}";

TEST(model_round_trip) {
    fed_model *m = model_from(cnn_spec);
    if (!m) return;
    fed_model_init(m, 11);
    fed_model_params(m)[0] = NAN; /* bit-exact means bit-exact */
    fed_model_params(m)[1] = -0.0f;
    fed_model_params(m)[2] = 1e-45f;
    CHECK_SIZE(fed_model_set_trainable_glob(m, "0.*", false), 2);
    fed_meta *extra = NULL, *meta = NULL;
    CHECK_OK(fed_meta_new(&extra));
    if (!extra) return;
    CHECK_OK(fed_meta_set(extra, "task", "digits"));
    CHECK_OK(fed_meta_set(extra, FED_META_ARCH, "ignored"));
    char path[128];
    tmp_path(path, sizeof path, "cnn.safetensors");
    CHECK_OK(fed_model_save(m, path, extra));
    fed_model *back = NULL;
    CHECK_OK(fed_model_load(&back, path, &meta));
    if (back && meta) {
        CHECK_SIZE(fed_model_num_params(back), fed_model_num_params(m));
        CHECK_MEM(fed_model_params(back), fed_model_params(m),
                  fed_model_num_params(m) * sizeof(float));
        CHECK_SIZE(fed_model_num_trainable(back), fed_model_num_trainable(m));
        CHECK(!fed_model_find(back, "0.weight")->trainable);
        CHECK(fed_model_find(back, "4.weight")->trainable);
        char *json = NULL;
        CHECK_OK(fed_arch_to_json(fed_model_arch(m), &json));
        CHECK_STR(fed_meta_get(meta, FED_META_ARCH), json);
        fed_free(json);
        CHECK_STR(fed_meta_key(meta, 0), FED_META_ARCH);
        CHECK_STR(fed_meta_key(meta, 1), FED_META_VERSION);
        CHECK_CONTAINS(fed_meta_get(meta, FED_META_VERSION), "fedtune");
        CHECK_STR(fed_meta_get(meta, FED_META_FROZEN), "[\"0.weight\",\"0.bias\"]");
        CHECK_STR(fed_meta_get(meta, "task"), "digits");
        CHECK_SIZE(fed_meta_count(meta), 4);
    }
    /* The file lists the tensors in table order, packed. */
    fed_st_file *f = NULL;
    CHECK_OK(fed_st_read(&f, path));
    if (f) {
        CHECK_SIZE(fed_st_count(f), fed_model_num_tensors(m));
        for (size_t i = 0; i < fed_st_count(f) && i < fed_model_num_tensors(m); i++) {
            CHECK_STR(fed_st_at(f, i)->name, fed_model_tensor(m, i)->name);
            CHECK_SIZE(fed_st_at(f, i)->begin, 4 * fed_model_tensor(m, i)->offset);
        }
    }
    fed_st_close(&f);
    fed_meta_destroy(&meta);
    fed_meta_destroy(&extra);
    fed_model_destroy(&back);
    fed_model_destroy(&m);
}

/* fed_model_load on a file whose metadata is mangled. */
static void bad_model_file(const char *name, const char *arch, const char *frozen, fed_err code,
                           const char *msg_part) {
    const float w[8] = {0};
    const size_t s24[2] = {2, 4}, s2[1] = {2};
    fed_st_entry e[2] = {{"0.weight", 2, s24, w}, {"0.bias", 1, s2, w}};
    fed_meta *meta = NULL;
    char path[128];
    if (fed_meta_new(&meta)) return;
    if (arch) CHECK_OK(fed_meta_set(meta, FED_META_ARCH, arch));
    if (frozen) CHECK_OK(fed_meta_set(meta, FED_META_FROZEN, frozen));
    CHECK_OK(fed_st_write(tmp_path(path, sizeof path, name), e, 2, meta));
    fed_model *m = NULL;
    fed_meta *out = NULL;
    fed_errclear();
    CHECK_ERR(fed_model_load(&m, path, &out), code);
    CHECK(m == NULL && out == NULL);
    CHECK_CONTAINS(fed_errmsg(), path);
    CHECK_CONTAINS(fed_errmsg(), msg_part);
    fed_meta_destroy(&meta);
    unlink(path);
}

TEST(model_load_errors) {
    const char *lin = "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":2}]}";
    bad_model_file("noarch.safetensors", NULL, NULL, FED_EFORMAT,
                   "no fedtune.arch in __metadata__; pass an architecture");
    bad_model_file("badarch.safetensors", "{\"input\":[4]}", NULL, FED_EFORMAT,
                   "fedtune.arch: architecture: field \"layers\"");
    bad_model_file("huge.safetensors",
                   "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":100000000}]}", NULL,
                   FED_EFORMAT, "has 500000000 parameters but the file holds only 10 values");
    bad_model_file("other.safetensors",
                   "{\"input\":[3],\"layers\":[{\"type\":\"linear\",\"out\":2}]}", NULL, FED_ESHAPE,
                   "tensor \"0.weight\": the file has shape [2, 4], the model [2, 3]");
    bad_model_file("frozen1.safetensors", lin, "[\"0.weight\",\"3.bias\"]", FED_EFORMAT,
                   "fedtune.frozen: \"3.bias\" is not a tensor of the model");
    bad_model_file("frozen2.safetensors", lin, "{}", FED_EFORMAT, "fedtune.frozen must be a JSON");
    bad_model_file("frozen3.safetensors", lin, "[", FED_EFORMAT,
                   "fedtune.frozen is not valid JSON");

    fed_model *m = NULL;
    char path[128];
    CHECK_ERR(fed_model_load(&m, tmp_path(path, sizeof path, "absent.safetensors"), NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "absent.safetensors: cannot open: No such file or directory");
    CHECK_ERR(fed_model_load(&m, tmpdir, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "not a regular file");
}

TEST(writer_rejects_bad_entries) {
    const float v[2] = {1, 2};
    const size_t s2[1] = {2}, huge[2] = {(size_t)1 << 40, (size_t)1 << 40};
    fed_st_entry e[2] = {{"a", 1, s2, v}, {"a", 1, s2, v}};
    void *buf = NULL;
    size_t len;
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "duplicate tensor name \"a\"");
    e[1].name = "";
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "tensor 1: empty name");
    e[1].name = "__metadata__";
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "is reserved");
    e[1].name = "\xc3(";
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "not valid UTF-8");
    e[1].name = "b";
    e[1].ndim = 9;
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    e[1].ndim = 2;
    e[1].shape = huge;
    CHECK_ERR(fed_st_encode(&buf, &len, e, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "tensor \"b\": shape too large");
    CHECK(buf == NULL);
}

TEST(atomic_writes) {
    const float v[4] = {1, 2, 3, 4};
    const size_t s4[1] = {4};
    fed_st_entry e = {"v", 1, s4, v};
    char path[256];
    /* A directory that does not exist. */
    snprintf(path, sizeof path, "%s/no/such/dir/m.safetensors", tmpdir);
    CHECK_ERR(fed_st_write(path, &e, 1, NULL), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), path);
    CHECK_CONTAINS(fed_errmsg(), "No such file or directory");

    /* An existing file survives a failed write untouched, and no temporary remains. */
    tmp_path(path, sizeof path, "keep.safetensors");
    const char old[] = "the old file";
    write_all(path, old, sizeof old);
    int entries = dir_entries();
    fed_model *m = model_from("fedavg-2nn"); /* 800 KB */
    struct rlimit saved, small;
    CHECK(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    small = saved;
    small.rlim_cur = 64 * 1024; /* writes past 64 KiB fail with EFBIG */
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    bool limited = m && setrlimit(RLIMIT_FSIZE, &small) == 0;
    CHECK(limited);
    if (limited) {
        CHECK_ERR(fed_model_save(m, path, NULL), FED_EIO);
        setrlimit(RLIMIT_FSIZE, &saved);
        CHECK_CONTAINS(fed_errmsg(), path);
        CHECK_CONTAINS(fed_errmsg(), "cannot write: File too large");
        unsigned char got[64];
        CHECK_INT(read_all(path, got, sizeof got), sizeof old);
        CHECK_MEM(got, old, sizeof old);
        CHECK_INT(dir_entries(), entries);
    }
    signal(SIGXFSZ, prev);
    /* Invalid entries never touch the target either. */
    fed_st_entry dup[2] = {e, e};
    CHECK_ERR(fed_st_write(path, dup, 2, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), path);
    unsigned char got[64];
    CHECK_INT(read_all(path, got, sizeof got), sizeof old);
    CHECK_INT(dir_entries(), entries);
    /* A replaced file keeps its mode. */
    chmod(path, 0600);
    CHECK_OK(fed_st_write(path, &e, 1, NULL));
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    fed_model_destroy(&m);
}

/* Fail-the-Nth-allocation: every failure is FED_ENOMEM with nothing leaked, until enough
 * allocations succeed. */
TEST(under_allocation_failure) {
    handmade h =
        make_file("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"}," T("x", "F32", "[2]", 0, 8) "," T(
                      "y", "F16", "[2,2]", 8, 16) "," T("z", "BF16", "[]", 16, 18) "}",
                  18);
    FOR_EACH_ALLOC_FAILURE(a) {
        fed_st_file *f = NULL;
        ALLOC_TRY(a, fed_st_parse(&f, h.bytes, h.len, "m.safetensors"));
        if (a.failed)
            CHECK(f == NULL);
        else
            CHECK_SIZE(fed_st_count(f), 3);
        fed_st_close(&f);
    }

    fed_model *m = model_from(cnn_spec);
    char path[128];
    tmp_path(path, sizeof path, "oom.safetensors");
    if (!m) return;
    fed_model_init(m, 5);
    fed_model_set_trainable_glob(m, "4.*", false);
    int entries = dir_entries();
    FOR_EACH_ALLOC_FAILURE(a) {
        ALLOC_TRY(a, fed_model_save(m, path, NULL));
        if (a.failed) CHECK_INT(dir_entries(), entries); /* nothing half-written */
    }

    FOR_EACH_ALLOC_FAILURE(a) {
        fed_model *back = NULL;
        fed_meta *meta = NULL;
        ALLOC_TRY(a, fed_model_load(&back, path, &meta));
        if (a.failed) {
            CHECK(back == NULL && meta == NULL);
        } else if (back) {
            CHECK_MEM(fed_model_params(back), fed_model_params(m),
                      fed_model_num_params(m) * sizeof(float));
            CHECK(!fed_model_find(back, "4.bias")->trainable);
        }
        fed_model_destroy(&back);
        fed_meta_destroy(&meta);
    }
    unlink(path);
    fed_model_destroy(&m);
}

/* Removes everything in tmpdir (flat) and tmpdir itself. */
static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (d) {
        char path[512];
        for (struct dirent *e; (e = readdir(d));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fedtune-st-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(metadata_list);
    RUN(exact_bytes_of_a_tiny_file);
    RUN(reads_the_reference_serialization);
    RUN(half_and_bfloat16_decoding);
    RUN(valid_edge_cases);
    RUN(malformed_files);
    RUN(load_weights_by_name);
    RUN(load_weights_converts_half_precision);
    RUN(model_round_trip);
    RUN(model_load_errors);
    RUN(writer_rejects_bad_entries);
    RUN(atomic_writes);
    RUN(under_allocation_failure);
    remove_tmpdir();
    return test_report();
}
