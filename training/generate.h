/* Text generation with a language model: a model whose input is a window of T token ids
 * (an embedding first) and whose output is (T, V), the next-token logits at every
 * position. Generating repeats: run the window, take the logits at the last real
 * position, draw the next id, append it; once the window is full it slides (the oldest
 * id drops out). The whole window runs every step (no key/value cache): simple, and
 * fine at the sizes fedtune trains. Positions after the last id hold -1 when the
 * embedding takes padding ("pad": true), else 0; a causal model does not look at them.
 *
 * Sampling: softmax(logits / temperature) over the top_k largest logits (0: all),
 * drawn from rng; temperature 0 is greedy (the largest logit, the smallest id on a tie).
 * Same model, prompt, options and seed: the same ids. */
#ifndef FED_GENERATE_H
#define FED_GENERATE_H

#include "core/err.h"
#include "core/model.h"
#include "core/rng.h"

#include <stddef.h>
#include <stdint.h>

/* Largest top_k. */
#define FED_GEN_MAX_TOP_K 65536

typedef struct fed_gen_config {
    size_t max_tokens;  /* ids to generate */
    double temperature; /* 0: greedy; else in (0, 100] */
    size_t top_k;       /* 0: every id; else at most FED_GEN_MAX_TOP_K */
    size_t vocab;       /* draw only ids below this (the tokenizer's size; 0: all V) */
    uint64_t seed;      /* of the draws */
} fed_gen_config;

/* One draw from logits[0..V) as above, using scratch idx (V entries). The id. */
int32_t fed_gen_sample(const float *logits, size_t V, double temperature, size_t top_k, size_t *idx,
                       fed_rng *rng);

/* The model's window length T and output width V, checked: FED_EINVAL naming what is
 * wrong when m is no language model (input not [T] ids with an embedding first, output
 * not T x V). */
fed_err fed_gen_shape(const fed_model *m, size_t *T, size_t *V) FED_MUST_USE;

/* Continues prompt[0..n) (n >= 1 ids below V) by cfg->max_tokens ids into a new
 * fed_malloc'd *out of *out_n = cfg->max_tokens ids (the prompt not included). */
fed_err fed_gen_run(fed_model *m, const int32_t *prompt, size_t n, const fed_gen_config *cfg,
                    int32_t **out, size_t *out_n) FED_MUST_USE;

#endif
