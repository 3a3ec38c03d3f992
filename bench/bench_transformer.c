/* bench_transformer: how fast fedcore trains transformer layers, in tokens per second.
 *
 * Two cases, each timed as whole fed_train_step calls (forward, loss, backward, plain SGD
 * at lr 0.01) on inputs from a fixed seed:
 *
 *   block  one pre-norm encoder block as USE-lite's layer 1 has it: LN -> 4-head
 *          self-attention -> + x, LN -> FFN 512-1536-512 (ReLU) -> + x, on (128, 512)
 *          float inputs, every tensor trainable, MSE against a random target; batch 16
 *          and 64. GFLOP/s counts the matrix products only (the projections, q k^T and
 *          P v, forward and both gradients: 3x the forward).
 *   use    the whole USE-lite encoder (tests/data/use_lite_arch.json, 7.0 M parameters)
 *          with a new 2-class head after its l2norm, random weights, softmax
 *          cross-entropy, on padded sentences whose lengths come from --lengths (one
 *          integer in [1, 128] a line, cycled in file order; without it a fixed synthetic
 *          mix of mean ~15) and token id (n * 131 + t * 31 + 7) mod 8002 for sentence n,
 *          position t: with only the head trainable ("use-head") and with everything
 *          trainable ("use-all"). tokens/s counts real tokens, not padding.
 *
 * The sgemm row is the reference of the same run: cblas_sgemm on 1024 x 1024 matrices with
 * the same thread count; %peak is the block's GFLOP/s over it.
 *
 * bench/bench_transformer.py is the PyTorch twin (same shapes, same weights, same
 * lengths and ids); bench/bench_transformer.sh runs both and prints the ratios.
 * --save DIR writes the initial weights (DIR/block.safetensors, DIR/use.safetensors)
 * for it and exits. Each figure is the median of several timed repeats after a warm-up;
 * --json prints one JSON object per row instead of the table. Not a test: tests/ checks
 * the numbers (interop_torch_transformer compares them with PyTorch autograd). */
#include "bench/benchlib.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/err.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/train.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEED          20261206u
#define LEARNING_RATE 0.01f
#define MAX_REPEATS   101
#define T_BLOCK       128
#define D_BLOCK       512
#define F_BLOCK       1536
#define USE_T         128
#define USE_VOCAB     8002
#define USE_CLASSES   2
/* Size of the square sgemm reference. */
#define SGEMM_N 1024
/* Distinct batches cycled through by the block case. */
#define BLOCK_BATCHES 4
/* Most lengths read from --lengths, and how many of them (the first) are used: every
 * repeat of a USE-lite case goes once through that many sentences. */
#define MAX_LENGTHS 100000
#define SENTENCES   512

static const char BLOCK_SPEC[] =
    "{\"input\":[128,512],\"layers\":["
    "{\"type\":\"residual\",\"name\":\"attn\",\"layers\":["
    "{\"type\":\"layernorm\",\"name\":\"attn.norm\",\"eps\":1e-6},"
    "{\"type\":\"attention\",\"name\":\"attn.mha\",\"heads\":4}]},"
    "{\"type\":\"residual\",\"name\":\"ffn\",\"layers\":["
    "{\"type\":\"layernorm\",\"name\":\"ffn.norm\",\"eps\":1e-6},"
    "{\"type\":\"linear\",\"name\":\"ffn.fc1\",\"out\":1536},{\"type\":\"relu\"},"
    "{\"type\":\"linear\",\"name\":\"ffn.fc2\",\"out\":512}]}]}";

static const size_t default_batches[] = {16, 64};
static const int default_threads[] = {1, 2};

/* ---- options ------------------------------------------------------------------------ */

typedef struct options {
    double seconds;      /* minimum wall time of one timed repeat */
    double repeats;      /* timed repeats per configuration; the median is reported */
    double batch;        /* only this batch size (0: 16 and 64) */
    double threads;      /* only this OpenBLAS thread count (0: 1 and 2) */
    const char *cases;   /* "sgemm", "block", "use-head", "use-all", comma-separated, or "all" */
    const char *lengths; /* sentence lengths file for the USE-lite cases */
    const char *arch;    /* the USE-lite architecture file */
    const char *save;    /* write the initial weights into this folder and exit */
    bool json;           /* JSON lines instead of the table */
    bool quick;          /* short repeats: a smoke run */
    bool help;           /* print usage and exit */
} options;

static const bench_opt opt_table[] = {
    {"--seconds", BENCH_NUMBER, offsetof(options, seconds), 0.001, 60.0, "S",
     "minimum time of each timed repeat"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "R",
     "timed repeats per configuration (median reported)"},
    {"--batch", BENCH_INTEGER, offsetof(options, batch), 0, 4096, "N",
     "only this batch size (default 0: 16 and 64)"},
    {"--threads", BENCH_INTEGER, offsetof(options, threads), 0, 64, "T",
     "only this OpenBLAS thread count (default 0: 1 and 2)"},
    {"--cases", BENCH_STRING, offsetof(options, cases), 0, 0, "LIST",
     "sgemm, block, use-head, use-all (comma-separated) or all [all]"},
    {"--lengths", BENCH_STRING, offsetof(options, lengths), 0, 0, "FILE",
     "sentence lengths for the USE-lite cases, one a line [synthetic, mean ~15]"},
    {"--arch", BENCH_STRING, offsetof(options, arch), 0, 0, "FILE",
     "the USE-lite architecture [tests/data/use_lite_arch.json]"},
    {"--save", BENCH_STRING, offsetof(options, save), 0, 0, "DIR",
     "write block.safetensors and use.safetensors (initial weights) and exit"},
    {"--json", BENCH_FLAG, offsetof(options, json), 0, 0, NULL, "one JSON object per row"},
    {"--quick", BENCH_FLAG, offsetof(options, quick), 0, 0, NULL,
     "smoke run: 0.05 s repeats, 3 repeats"},
    {"--help", BENCH_FLAG, offsetof(options, help), 0, 0, NULL, "print this help"},
};
#define NUM_OPTS (sizeof opt_table / sizeof opt_table[0])

static options default_options(void) {
    options o = {.seconds = 1.0, .repeats = 5, .cases = "all", .arch = FED_USE_LITE_ARCH};
    return o;
}

static bool parse_args(options *o, int argc, char **argv) {
    *o = default_options();
    if (!bench_parse("bench_transformer", opt_table, NUM_OPTS, o, argc, argv)) return false;
    if (o->quick) {
        o->seconds = 0.05;
        o->repeats = 3;
    }
    return true;
}

static bool wants(const options *o, const char *name) {
    if (strcmp(o->cases, "all") == 0) return true;
    size_t n = strlen(name);
    for (const char *p = o->cases; (p = strstr(p, name)); p += n)
        if ((p == o->cases || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
    return false;
}

/* ---- inputs --------------------------------------------------------------------------- */

/* The whole of a small text file, NUL-terminated; NULL if it cannot be read. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && n < (1L << 24) && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = fed_malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            fed_free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* Sentence lengths from path (one integer in [1, USE_T] a line), or the synthetic mix:
 * 1 + a geometric-like draw, mean ~15, capped at USE_T. */
static fed_err load_lengths(const char *path, size_t **out, size_t *n) {
    *out = fed_mallocarray(MAX_LENGTHS, sizeof **out);
    if (!*out) return FED_ENOMEM;
    *n = 0;
    if (!path) {
        fed_rng r = fed_rng_stream(SEED, 77);
        for (; *n < SENTENCES; (*n)++) {
            double u = fed_rng_uniform_d(&r);
            size_t L = 1 + (size_t)(-14.0 * log(1.0 - u));
            (*out)[*n] = L < USE_T ? L : USE_T;
        }
        return FED_OK;
    }
    char *text = read_file(path);
    if (!text) return fed_errorf(FED_EIO, "%s: cannot read", path);
    fed_err err = FED_OK;
    size_t line = 1;
    for (char *p = text; *p; line++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > USE_T || (*end != '\n' && *end != '\0') || *n == MAX_LENGTHS) {
            err = fed_errorf(FED_EFORMAT, "%s:%zu: want one length in [1, %d] a line (at most %d)",
                             path, line, USE_T, MAX_LENGTHS);
            break;
        }
        (*out)[(*n)++] = (size_t)v;
        p = *end ? end + 1 : end;
    }
    if (!err && *n == 0) err = fed_errorf(FED_EFORMAT, "%s: no lengths", path);
    if (*n > SENTENCES) *n = SENTENCES;
    fed_free(text);
    return err;
}

/* ---- one configuration ------------------------------------------------------------------ */

typedef struct trainer {
    fed_model *m;        /* the model */
    fed_optim *opt;      /* plain SGD over the trainable tensors */
    fed_arena *arena;    /* per-step scratch */
    float *x;            /* (nbatches * batch, in) inputs */
    float *target;       /* block: (nbatches * batch, out) MSE targets */
    int32_t *labels;     /* use: (nbatches * batch) class ids */
    size_t batch;        /* examples per step */
    size_t nbatches;     /* distinct batches */
    size_t in, out;      /* floats per example entering and leaving */
    size_t k;            /* steps taken */
    double tokens;       /* real tokens in all nbatches batches */
    fed_step_stats last; /* of the last step */
} trainer;

static void trainer_destroy(trainer *t) {
    fed_free(t->x);
    fed_free(t->target);
    fed_free(t->labels);
    fed_arena_destroy(&t->arena);
    fed_optim_destroy(&t->opt);
    fed_model_destroy(&t->m);
}

/* The block model, or USE-lite with its new head (head_only: everything else frozen). */
static fed_err make_model(fed_model **out, bool use, bool head_only, const options *o) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    char *spec = NULL;
    fed_err err;
    if (use && !(spec = read_file(o->arch))) return fed_errorf(FED_EIO, "%s: cannot read", o->arch);
    if ((err = fed_arch_parse(&a, use ? spec : BLOCK_SPEC)) || (err = fed_model_new(&m, a)))
        goto fail;
    fed_model_init(m, SEED);
    if (use) {
        if ((err = fed_model_new_head(out, m, USE_CLASSES, SEED))) goto fail;
        if (head_only) {
            fed_model_set_trainable_glob(*out, "*", false);
            fed_model_set_trainable_glob(*out, "head.*", true);
        }
    } else {
        *out = m;
        m = NULL;
    }
fail:
    fed_model_destroy(&m);
    fed_arch_destroy(&a);
    fed_free(spec);
    return err;
}

static fed_err trainer_init(trainer *t, bool use, bool head_only, size_t batch,
                            const size_t *lengths, size_t nlengths, const options *o) {
    memset(t, 0, sizeof *t);
    fed_err err = make_model(&t->m, use, head_only, o);
    if (err) return err;
    fed_optim_config oc = fed_optim_defaults(FED_OPT_SGD);
    if ((err = fed_optim_new(&t->opt, t->m, &oc)) || (err = fed_arena_new(&t->arena, 0))) goto fail;
    t->batch = batch;
    t->in = fed_model_input_size(t->m);
    t->out = fed_model_output_size(t->m);
    /* USE-lite: enough batches to go once through the lengths (at least 8). */
    t->nbatches = use ? (nlengths + batch - 1) / batch : BLOCK_BATCHES;
    if (use && t->nbatches < 8) t->nbatches = 8;
    size_t nex = t->nbatches * batch;
    err = FED_ENOMEM;
    t->x = fed_aligned_alloc(nex * t->in, sizeof(float));
    if (!t->x) goto fail;
    fed_rng r = fed_rng_stream(SEED, batch);
    if (use) {
        if (!(t->labels = fed_mallocarray(nex, sizeof *t->labels))) goto fail;
        for (size_t n = 0; n < nex; n++) {
            size_t L = lengths[n % nlengths];
            for (size_t i = 0; i < USE_T; i++)
                t->x[n * USE_T + i] = i < L ? (float)((n * 131 + i * 31 + 7) % USE_VOCAB) : -1.0f;
            t->labels[n] = (int32_t)(n % USE_CLASSES);
            t->tokens += (double)L;
        }
    } else {
        if (!(t->target = fed_aligned_alloc(nex * t->out, sizeof(float)))) goto fail;
        for (size_t i = 0; i < nex * t->in; i++) t->x[i] = 2.0f * fed_rng_uniform(&r) - 1.0f;
        for (size_t i = 0; i < nex * t->out; i++) t->target[i] = 2.0f * fed_rng_uniform(&r) - 1.0f;
        t->tokens = (double)(nex * T_BLOCK);
    }
    err = FED_OK;
fail:
    if (err) trainer_destroy(t);
    return err;
}

static fed_err trainer_step(trainer *t) {
    size_t j = t->k++ % t->nbatches;
    fed_batch b = {t->x + j * t->batch * t->in, t->labels ? t->labels + j * t->batch : NULL,
                   t->target ? t->target + j * t->batch * t->out : NULL, t->batch};
    fed_loss_config loss = {t->labels ? FED_LOSS_SOFTMAX_CE : FED_LOSS_MSE, 0.0f};
    return fed_train_step(t->m, t->opt, t->arena, &b, &loss, LEARNING_RATE, NULL, &t->last);
}

typedef struct result {
    double tokens_per_s[MAX_REPEATS]; /* per repeat */
    double median, min, max;          /* of tokens_per_s */
    double ms_per_step;               /* at the median */
    double loss;                      /* of the last step: finite, or the figures are suspect */
} result;

/* Repeats of >= o->seconds; the USE-lite cases always step through whole rounds of their
 * batches so every repeat sees the same mix of lengths. */
static fed_err time_case(trainer *t, const options *o, result *res) {
    fed_err err;
    size_t round = t->labels ? t->nbatches : 1;
    double per_step_tokens = t->tokens / (double)t->nbatches;
    double t0 = fed_now_s();
    do {
        if ((err = trainer_step(t))) return err;
    } while (t->k < 3 || t->k % round || fed_now_s() - t0 < 0.5 * o->seconds);
    size_t R = (size_t)o->repeats;
    for (size_t rep = 0; rep < R; rep++) {
        size_t k0 = t->k;
        double start = fed_now_s(), el;
        do {
            if ((err = trainer_step(t))) return err;
        } while ((el = fed_now_s() - start) < o->seconds || t->k % round);
        res->tokens_per_s[rep] = per_step_tokens * (double)(t->k - k0) / el;
    }
    double v[MAX_REPEATS];
    memcpy(v, res->tokens_per_s, R * sizeof *v);
    res->median = bench_median(v, R);
    res->min = v[0];
    res->max = v[R - 1];
    res->ms_per_step = 1e3 * per_step_tokens / res->median;
    res->loss = t->last.loss;
    return FED_OK;
}

/* Matrix-product FLOPs of one block training step per token (3x the forward). */
static double block_flops_per_token(void) {
    double D = D_BLOCK, F = F_BLOCK, T = T_BLOCK;
    double fwd = 2.0 * D * 3.0 * D + 2.0 * D * D + 2.0 * 2.0 * T * D + 2.0 * 2.0 * D * F;
    return 3.0 * fwd;
}

/* ---- output --------------------------------------------------------------------------- */

static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return -1.0;
    double l;
    if (fscanf(f, "%lf", &l) != 1) l = -1.0;
    fclose(f);
    return l;
}

/* This run's sgemm GFLOP/s for the current thread count, 0 when not measured. */
static double sgemm_peak;

static void print_row(const options *o, const char *name, size_t batch, int threads,
                      const result *r, double mean_len) {
    double spread = 100.0 * (r->max - r->min) / r->median;
    if (o->json) {
        printf("{\"framework\":\"fedtune\",\"case\":\"%s\",\"batch\":%zu,\"threads\":%d,"
               "\"tokens_per_s\":%.1f,\"ms_per_step\":%.3f,\"spread_pct\":%.1f,"
               "\"mean_len\":%.2f,\"loss\":%.6g}\n",
               name, batch, threads, r->median, r->ms_per_step, spread, mean_len, r->loss);
    } else {
        char gf[16] = "-", pct[16] = "-";
        double g = r->median * block_flops_per_token() / 1e9;
        if (strcmp(name, "block") == 0) snprintf(gf, sizeof gf, "%.1f", g);
        if (strcmp(name, "block") == 0 && sgemm_peak > 0.0)
            snprintf(pct, sizeof pct, "%.0f%%", 100.0 * g / sgemm_peak);
        printf("%-9s %5zu %7d %10.2f %11.0f %8s %6s %6.0f%%%s\n", name, batch, threads,
               r->ms_per_step, r->median, gf, pct, spread,
               isfinite(r->loss) ? "" : "  (loss not finite!)");
    }
    fflush(stdout);
}

static fed_err run_case(const char *name, size_t batch, int threads, const size_t *lengths,
                        size_t nlengths, const options *o) {
    bool use = strncmp(name, "use", 3) == 0;
    trainer t;
    fed_err err = trainer_init(&t, use, strcmp(name, "use-head") == 0, batch, lengths, nlengths, o);
    if (err) return err;
    result r;
    err = time_case(&t, o, &r);
    if (!err) print_row(o, name, batch, threads, &r, t.tokens / (double)(t.nbatches * batch));
    trainer_destroy(&t);
    return err;
}

static fed_err save_models(const options *o) {
    static const char *const files[] = {"block.safetensors", "use.safetensors"};
    for (int i = 0; i < 2; i++) {
        fed_model *m = NULL;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", o->save, files[i]);
        fed_err err = make_model(&m, i == 1, false, o);
        if (!err) err = fed_model_save(m, path, NULL);
        fed_model_destroy(&m);
        if (err) return err;
    }
    return FED_OK;
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(&o, argc, argv)) return 2;
    if (o.help) {
        options d = default_options();
        bench_usage(stdout, "bench_transformer",
                    "Times fed_train_step on one encoder block (width 512, 4 heads, FFN 1536,\n"
                    "T 128) and on USE-lite with a new head, in tokens/s.",
                    opt_table, NUM_OPTS, &d);
        return 0;
    }
    fed_err err;
    if (o.save) {
        if ((err = save_models(&o))) {
            fprintf(stderr, "bench_transformer: %s\n", fed_errdetail(err));
            return 1;
        }
        return 0;
    }
    size_t *lengths = NULL, nlengths = 0;
    if ((err = load_lengths(o.lengths, &lengths, &nlengths))) {
        fprintf(stderr, "bench_transformer: %s\n", fed_errdetail(err));
        fed_free(lengths);
        return 1;
    }
    size_t one_batch = (size_t)o.batch, nb = one_batch ? 1 : 2;
    const size_t *batches = one_batch ? &one_batch : default_batches;
    int one_thread = (int)o.threads;
    size_t nt = one_thread ? 1 : 2;
    const int *threads = one_thread ? &one_thread : default_threads;
    static const char *const cases[] = {"block", "use-head", "use-all"};

    if (!o.json) {
        time_t now = time(NULL);
        char date[32];
        strftime(date, sizeof date, "%Y-%m-%d %H:%M", gmtime(&now));
        const char *coretype = getenv("OPENBLAS_CORETYPE");
        printf("fedtune bench_transformer, %s UTC; OpenBLAS: %s (OPENBLAS_CORETYPE=%s)\n", date,
               fed_blas_config(), coretype ? coretype : "unset");
        printf("one step = fed_train_step (forward + loss + backward + SGD); median of %d "
               "repeats of >= %.2f s;\nload average (1 min) at start: %.2f on %ld CPUs\n\n",
               (int)o.repeats, o.seconds, load_average(), sysconf(_SC_NPROCESSORS_ONLN));
        printf("%-9s %5s %7s %10s %11s %8s %6s %7s\n", "case", "batch", "threads", "ms/step",
               "tokens/s", "GFLOP/s", "%peak", "spread");
    }
    for (size_t ti = 0; ti < nt && !err; ti++) {
        fed_blas_set_threads(threads[ti]);
        sgemm_peak = 0.0;
        if (wants(&o, "sgemm") &&
            !(err = bench_sgemm_gflops(SGEMM_N, o.seconds, (size_t)o.repeats, &sgemm_peak))) {
            if (o.json)
                printf("{\"framework\":\"sgemm\",\"case\":\"sgemm\",\"n\":%d,\"threads\":%d,"
                       "\"gflops\":%.1f}\n",
                       SGEMM_N, threads[ti], sgemm_peak);
            else
                printf("%-9s %5s %7d %10s %11s %8.1f %6s %7s\n", "sgemm", "-", threads[ti], "-",
                       "-", sgemm_peak, "ref", "-");
        }
        for (size_t ci = 0; ci < 3 && !err; ci++) {
            if (!wants(&o, cases[ci])) continue;
            for (size_t bi = 0; bi < nb && !err; bi++)
                err = run_case(cases[ci], batches[bi], threads[ti], lengths, nlengths, &o);
        }
    }
    fed_free(lengths);
    if (err) {
        fprintf(stderr, "bench_transformer: %s\n", fed_errdetail(err));
        return 1;
    }
    if (!o.json)
        printf("\nload average (1 min) at end: %.2f (this run adds up to the thread count)\n",
               load_average());
    return 0;
}
