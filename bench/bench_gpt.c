/* bench_gpt: one training step of a small GPT (examples/archs/gpt-mini.json's shape:
 * learned positions, pre-norm blocks of causal attention and a GELU MLP 4x, a final layer
 * norm, the lmhead tied to the embedding) under the next-token loss, and the memory a
 * step takes.
 *
 * The model is built from --vocab, --ctx, --dim, --layers and --heads with random
 * weights (init "gpt2"), trained with AdamW at lr 1e-3 on batches of --batch full-length
 * sequences of random token ids. For each thread count from 1 to --threads it prints the
 * median time of a step over --repeats timed runs of at least --seconds each (after a
 * warm-up), examples/s and tokens/s, the GFLOP/s of the step's matrix products (the
 * linear layers and the lmhead as fed_model_train_flops counts them, plus q k^T and P v:
 * 3x the forward) and, as the reference measured in the same run, cblas_sgemm's GFLOP/s
 * on 1024 x 1024 matrices with the same thread count (%peak = the ratio). The arena rows
 * give the per-step scratch memory (activations, saved-for-backward buffers, logits) of a
 * training step and of an evaluation step of the same batch, against the parameters'
 * size: the (N, T, V) logits dominate at a large vocabulary. Not a test. */
#include "bench/benchlib.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/blas.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEATS 51
#define SPEC_MAX    65536

typedef struct options {
    double vocab, ctx, dim, layers, heads, batch, threads, seconds, repeats;
} options;

static const bench_opt opt_table[] = {
    {"--vocab", BENCH_INTEGER, offsetof(options, vocab), 2, 1 << 20, "V", "vocabulary"},
    {"--ctx", BENCH_INTEGER, offsetof(options, ctx), 2, 4096, "T", "context (tokens per example)"},
    {"--dim", BENCH_INTEGER, offsetof(options, dim), 4, 4096, "D", "width"},
    {"--layers", BENCH_INTEGER, offsetof(options, layers), 1, 64, "L", "blocks"},
    {"--heads", BENCH_INTEGER, offsetof(options, heads), 1, 64, "H", "attention heads"},
    {"--batch", BENCH_INTEGER, offsetof(options, batch), 1, 4096, "N", "examples per step"},
    {"--threads", BENCH_INTEGER, offsetof(options, threads), 1, 256, "N",
     "time 1 .. N OpenBLAS threads"},
    {"--seconds", BENCH_NUMBER, offsetof(options, seconds), 0.01, 600, "S", "per timed run"},
    {"--repeats", BENCH_INTEGER, offsetof(options, repeats), 1, MAX_REPEATS, "R", "timed runs"},
};
#define NOPTS (sizeof opt_table / sizeof opt_table[0])

/* The architecture of examples/archs/gpt-mini.json at the given sizes. */
static void gpt_spec(char *s, const options *o) {
    size_t D = (size_t)o->dim;
    int n = snprintf(s, SPEC_MAX,
                     "{\"input\":[%zu],\"layers\":[{\"type\":\"embedding\",\"vocab\":%zu,"
                     "\"dim\":%zu,\"pad\":true,\"init\":\"gpt2\",\"name\":\"wte\"},"
                     "{\"type\":\"positions\",\"kind\":\"learned\",\"name\":\"wpe\"}",
                     (size_t)o->ctx, (size_t)o->vocab, D);
    for (size_t l = 0; l < (size_t)o->layers; l++)
        n += snprintf(s + n, SPEC_MAX - (size_t)n,
                      ",{\"type\":\"residual\",\"name\":\"h%zu.attn\",\"layers\":[{\"type\":"
                      "\"layernorm\"},{\"type\":\"attention\",\"heads\":%zu,\"causal\":true,"
                      "\"init\":\"gpt2\"}]},{\"type\":\"residual\",\"name\":\"h%zu.mlp\","
                      "\"layers\":[{\"type\":\"layernorm\"},{\"type\":\"linear\",\"out\":%zu,"
                      "\"init\":\"gpt2\"},{\"type\":\"gelu\"},{\"type\":\"linear\",\"out\":%zu,"
                      "\"init\":\"gpt2\"}]}",
                      l, (size_t)o->heads, l, 4 * D, D);
    snprintf(s + n, SPEC_MAX - (size_t)n,
             ",{\"type\":\"layernorm\",\"name\":\"ln_f\"},{\"type\":\"lmhead\",\"tie\":\"wte\"}]}");
}

static void die(const char *what, fed_err err) {
    fprintf(stderr, "bench_gpt: %s: %s\n", what, fed_errdetail(err));
    exit(1);
}

int main(int argc, char **argv) {
    options o = {4096, 128, 128, 4, 4, 16, 2, 1.0, 3};
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        bench_usage(stdout, "bench_gpt", "One training step of a small GPT.", opt_table, NOPTS, &o);
        return 0;
    }
    if (!bench_parse("bench_gpt", opt_table, NOPTS, &o, argc, argv)) return 2;
    char *spec = malloc(SPEC_MAX);
    if (!spec) return 1;
    gpt_spec(spec, &o);
    fed_arch *arch = NULL;
    fed_model *m = NULL;
    fed_optim *opt = NULL;
    fed_arena *arena = NULL;
    fed_err err;
    if ((err = fed_arch_parse(&arch, spec))) die("architecture", err);
    if ((err = fed_model_new(&m, arch))) die("model", err);
    fed_model_init(m, 1);
    fed_optim_config oc = fed_optim_defaults(FED_OPT_ADAMW);
    if ((err = fed_optim_new(&opt, m, &oc)) || (err = fed_arena_new(&arena, 0))) die("setup", err);
    const size_t N = (size_t)o.batch, T = (size_t)o.ctx, V = (size_t)o.vocab;
    float *x = malloc(N * T * sizeof(float));
    if (!x) return 1;
    fed_rng r = fed_rng_stream(7, 0);
    for (size_t i = 0; i < N * T; i++) x[i] = (float)fed_rng_below(&r, V);
    fed_batch b = {x, NULL, NULL, N};
    fed_loss_config loss = {fed_loss_for_model(m), 0.0f};
    fed_step_stats st;
    /* Memory: an evaluation step, then a training step, each in a fresh arena. */
    fed_arena *ea = NULL;
    if ((err = fed_arena_new(&ea, 0)) || (err = fed_eval_batch(m, ea, &b, &loss, &st)))
        die("eval step", err);
    size_t eval_bytes = fed_arena_used(ea);
    fed_arena_destroy(&ea);
    if ((err = fed_train_step(m, opt, arena, &b, &loss, 1e-3f, NULL, &st))) die("train step", err);
    size_t train_bytes = fed_arena_used(arena);
    const double MB = 1048576.0;
    printf("gpt V %zu T %zu D %zu layers %zu heads %zu batch %zu: %zu parameters (%.1f MB)\n", V, T,
           (size_t)o.dim, (size_t)o.layers, (size_t)o.heads, N, fed_model_num_params(m),
           (double)fed_model_num_params(m) * 4 / MB);
    printf("arena: train step %.1f MB, eval step %.1f MB; logits (N, T, V) %.1f MB\n",
           (double)train_bytes / MB, (double)eval_bytes / MB, (double)(N * T * V) * 4 / MB);
    /* Matrix-product FLOPs of a step: the linear layers and the head, plus attention's
     * q k^T and P v (causal: half of T x T, but the kernel computes the full rows). */
    double D = o.dim, attn = 3.0 * 2.0 * 2.0 * (double)T * D * o.layers;
    double flops = (fed_model_train_flops(m) + attn * (double)T) * (double)N;
    printf("%7s %10s %10s %10s %9s %12s %6s  loss\n", "threads", "ms/step", "examples/s",
           "tokens/s", "GFLOP/s", "sgemm GF/s", "%peak");
    for (int th = 1; th <= (int)o.threads; th++) {
        fed_blas_set_threads(th);
        double sgemm = 0.0, v[MAX_REPEATS];
        if ((err = bench_sgemm_gflops(1024, 0.3, 3, &sgemm))) die("sgemm", err);
        for (int w = 0; w < 2; w++)
            if ((err = fed_train_step(m, opt, arena, &b, &loss, 1e-3f, NULL, &st)))
                die("step", err);
        for (size_t rep = 0; rep < (size_t)o.repeats; rep++) {
            size_t k = 0;
            double t0 = fed_now_s(), el;
            do {
                if ((err = fed_train_step(m, opt, arena, &b, &loss, 1e-3f, NULL, &st)))
                    die("step", err);
                k++;
            } while ((el = fed_now_s() - t0) < o.seconds);
            v[rep] = el / (double)k;
        }
        double s = bench_median(v, (size_t)o.repeats), gf = flops / s / 1e9;
        printf("%7d %10.1f %10.1f %10.0f %9.1f %12.1f %5.0f%%  %.3f\n", th, 1e3 * s, (double)N / s,
               (double)(N * T) / s, gf, sgemm, 100.0 * gf / sgemm, st.loss);
        fflush(stdout);
    }
    free(x);
    free(spec);
    fed_arena_destroy(&arena);
    fed_optim_destroy(&opt);
    fed_model_destroy(&m);
    fed_arch_destroy(&arch);
    return 0;
}
