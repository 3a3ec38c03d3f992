/* bench_codec: encode and decode speed of the update codecs (core/codec.h) on one core,
 * in GB/s of float32 input (4 n bytes / time), against memcpy of the same 4 n bytes
 * measured in the same run (the ratio column: codec speed / memcpy speed). The goal is
 * >= 1 GB/s for every codec. Each figure is the median of repeats; the vector is a
 * Gaussian delta of n floats (an update's shape does not matter to the codecs; top-k's
 * selection does not depend on the values' order). This is not a test (ctest never runs
 * it), but it checks every decode against the encoder's own `sent` output so a broken
 * codec cannot report a good speed. */
#include "bench/benchlib.h"
#include "core/alloc.h"
#include "core/codec.h"
#include "core/rng.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_REPEATS 51

typedef struct options {
    double size_mb; /* the vector in MB of float32 */
    double repeats; /* timed runs per figure; medians reported */
    bool help;
} options;

static const bench_opt opt_table[] = {
    {"--size", BENCH_NUMBER, offsetof(options, size_mb), 1, 4000, "MB",
     "vector size in MB (10^6 bytes) of float32"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "N",
     "timed runs per figure (median)"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "show this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

static const char *const codecs[] = {"fp16",      "bf16",         "q8",           "q4",
                                     "topk:0.01", "topk:0.01+q8", "topk:0.1+fp16"};
#define NUM_CODECS (sizeof codecs / sizeof codecs[0])

/* Median seconds of `repeats` runs of what (0: memcpy, 1: encode, 2: decode). */
static double timed(int what, size_t repeats, const fed_codec *c, const float *x, float *y,
                    size_t n, uint8_t *buf, size_t len, fed_err *err) {
    double t[MAX_REPEATS];
    for (size_t r = 0; r < repeats; r++) {
        double t0 = fed_now_s();
        if (what == 0)
            memcpy(y, x, n * sizeof *x);
        else if (what == 1)
            *err = fed_codec_encode(c, x, n, r, buf, len, NULL);
        else
            *err = fed_codec_decode(buf, len, y, n, NULL);
        t[r] = fed_now_s() - t0;
        if (*err) return 0;
    }
    return bench_median(t, repeats);
}

int main(int argc, char **argv) {
    options o = {100, 7, false};
    if (!bench_parse("bench_codec", opt_table, NUM_OPTS, &o, argc, argv)) return 2;
    if (o.help) {
        options d = {100, 7, false};
        bench_usage(stdout, "bench_codec",
                    "Encode and decode GB/s (of float32 input) of each update codec on one\n"
                    "core, against memcpy of the same bytes in the same run.",
                    opt_table, NUM_OPTS, &d);
        return 0;
    }
    size_t n = (size_t)(o.size_mb * 1e6 / sizeof(float)), repeats = (size_t)o.repeats;
    float *x = fed_mallocarray(n, sizeof *x), *y = fed_mallocarray(n, sizeof *y),
          *sent = fed_mallocarray(n, sizeof *sent);
    uint8_t *buf = fed_malloc(n * sizeof(float) + 4096);
    if (!x || !y || !sent || !buf) {
        fprintf(stderr, "bench_codec: out of memory\n");
        return 1;
    }
    fed_rng rng;
    fed_rng_seed(&rng, 20261207u);
    for (size_t i = 0; i < n; i++) x[i] = 0.01f * fed_rng_normal(&rng);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", gmtime(&now));
    printf("fedtune bench_codec, %s UTC: %zu floats (%.0f MB), median of %zu, one thread\n\n", date,
           n, o.size_mb, repeats);
    fed_err err = FED_OK;
    double gb = (double)n * sizeof(float) / 1e9;
    double mem = gb / timed(0, repeats, NULL, x, y, n, NULL, 0, &err);
    printf("%-16s %10s %9s %10s %9s %10s\n", "codec", "bytes/f32", "enc GB/s", "enc/memcpy",
           "dec GB/s", "dec/memcpy");
    printf("%-16s %10.4f %9.2f %10.3f %9.2f %10.3f\n", "memcpy", 1.0, mem, 1.0, mem, 1.0);
    for (size_t i = 0; i < NUM_CODECS; i++) {
        fed_codec c;
        if ((err = fed_codec_parse(&c, codecs[i]))) break;
        size_t len = fed_codec_size(&c, n);
        double enc = gb / timed(1, repeats, &c, x, y, n, buf, len, &err);
        if (err) break;
        double dec = gb / timed(2, repeats, &c, x, y, n, buf, len, &err);
        if (err) break;
        /* The check: the last stream decodes to what its encoder said it sent. */
        if ((err = fed_codec_encode(&c, x, n, 1, buf, len, sent)) ||
            (err = fed_codec_decode(buf, len, y, n, NULL)))
            break;
        if (memcmp(y, sent, n * sizeof *y) != 0) {
            fprintf(stderr, "bench_codec: %s decodes to other values than it sent\n", codecs[i]);
            return 1;
        }
        printf("%-16s %10.4f %9.2f %10.3f %9.2f %10.3f\n", codecs[i],
               (double)len / ((double)n * sizeof(float)), enc, enc / mem, dec, dec / mem);
        fflush(stdout);
    }
    if (err) {
        fprintf(stderr, "bench_codec: %s\n", fed_errdetail(err));
        return 1;
    }
    fed_free(x);
    fed_free(y);
    fed_free(sent);
    fed_free(buf);
    return 0;
}
