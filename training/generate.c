/* Text generation (see generate.h): the sampler and the loop that slides a window of ids
 * through the model. Turning text into ids and back is the tokenizer's (dataset/). */
#include "training/generate.h"
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"

#include <math.h>
#include <string.h>

/* a ranks before b: the larger logit, the smaller id on a tie. */
static bool before(const float *l, size_t a, size_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

int32_t fed_gen_sample(const float *logits, size_t V, double temperature, size_t top_k, size_t *idx,
                       fed_rng *rng) {
    size_t best = 0;
    for (size_t i = 1; i < V; i++)
        if (before(logits, i, best)) best = i;
    if (temperature <= 0.0 || V == 1) return (int32_t)best;
    size_t k = top_k == 0 || top_k > V ? V : top_k;
    if (k == V) {
        for (size_t i = 0; i < V; i++) idx[i] = i;
    } else { /* the k best by insertion: V x k, fine for the k of sampling */
        size_t n = 0;
        for (size_t i = 0; i < V; i++) {
            if (n == k && !before(logits, i, idx[k - 1])) continue;
            size_t j = n < k ? n++ : k - 1;
            while (j > 0 && before(logits, i, idx[j - 1])) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = i;
        }
    }
    double top = logits[best], sum = 0.0;
    for (size_t j = 0; j < k; j++) sum += exp(((double)logits[idx[j]] - top) / temperature);
    double u = fed_rng_uniform_d(rng) * sum, acc = 0.0;
    for (size_t j = 0; j < k; j++) {
        acc += exp(((double)logits[idx[j]] - top) / temperature);
        if (u < acc) return (int32_t)idx[j];
    }
    return (int32_t)idx[k - 1]; /* rounding left u at the very end */
}

fed_err fed_gen_shape(const fed_model *m, size_t *T, size_t *V) {
    const fed_arch *a = fed_model_arch(m);
    fed_shape in = fed_arch_input_shape(a);
    if (in.ndim != 1 || fed_arch_num_layers(a) == 0 ||
        fed_arch_layer(a, 0)->kind != FED_LAYER_EMBEDDING)
        return fed_errorf(FED_EINVAL, "the model is no language model: its input must be [T] "
                                      "token ids into an embedding");
    *T = in.d[0];
    size_t out = fed_model_output_size(m);
    if (*T < 1 || out % *T != 0 || out / *T < 2)
        return fed_errorf(FED_EINVAL,
                          "the model is no language model: its output (%zu values) is not T x V "
                          "next-token logits for T = %zu",
                          out, *T);
    *V = out / *T;
    return FED_OK;
}

fed_err fed_gen_run(fed_model *m, const int32_t *prompt, size_t n, const fed_gen_config *cfg,
                    int32_t **out, size_t *out_n) {
    *out = NULL;
    *out_n = 0;
    size_t T = 0, V = 0;
    fed_err err = fed_gen_shape(m, &T, &V);
    if (err) return err;
    if (n == 0) return fed_errorf(FED_EINVAL, "an empty prompt: nothing to continue");
    size_t vocab = cfg->vocab && cfg->vocab < V ? cfg->vocab : V;
    for (size_t i = 0; i < n; i++)
        if (prompt[i] < 0 || (size_t)prompt[i] >= V)
            return fed_errorf(FED_EINVAL, "prompt id %ld at %zu is not in [0, %zu)",
                              (long)prompt[i], i, V);
    size_t total;
    if (!fed_add_ok(n, cfg->max_tokens, &total)) return FED_ERANGE;
    bool padded = fed_arch_layer(fed_model_arch(m), 0)->padded;
    int32_t *ctx = fed_mallocarray(total ? total : 1, sizeof *ctx);
    float *x = fed_mallocarray(T, sizeof *x);
    size_t *idx = fed_mallocarray(V, sizeof *idx);
    fed_arena *arena = NULL;
    if (!ctx || !x || !idx || (err = fed_arena_new(&arena, 0))) {
        err = err ? err : FED_ENOMEM;
        goto done;
    }
    memcpy(ctx, prompt, n * sizeof *ctx);
    fed_rng rng = fed_rng_stream(cfg->seed, 0x67656e);
    for (size_t len = n; len < total; len++) {
        size_t w = len < T ? len : T, from = len - w;
        for (size_t i = 0; i < T; i++) x[i] = i < w ? (float)ctx[from + i] : padded ? -1.0f : 0.0f;
        fed_arena_reset(arena);
        const float *y = NULL;
        if ((err = fed_model_forward(m, arena, x, 1, FED_MODE_EVAL, NULL, &y))) goto done;
        ctx[len] = fed_gen_sample(y + (w - 1) * V, vocab, cfg->temperature, cfg->top_k, idx, &rng);
    }
    if (cfg->max_tokens) {
        *out = fed_mallocarray(cfg->max_tokens, sizeof **out);
        if (!*out) {
            err = FED_ENOMEM;
            goto done;
        }
        memcpy(*out, ctx + n, cfg->max_tokens * sizeof **out);
    }
    *out_n = cfg->max_tokens;
done:
    fed_arena_destroy(&arena);
    fed_free(ctx);
    fed_free(x);
    fed_free(idx);
    return err;
}
