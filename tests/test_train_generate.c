/* Tests of text generation (training/generate.h) on models whose output is known: the
 * sampler on hand-written logits (greedy, ties, top-k, temperature, the draw's
 * frequencies under a fixed seed), and the generation loop on a hand-made "model" whose
 * next id is always (id + 1) mod 5, run past its window so that it slides; the same
 * seed gives the same ids; what is no language model is refused with its reason. */
#include "core/alloc.h"
#include "core/arch.h"
#include "core/model.h"
#include "tests/test.h"
#include "training/generate.h"

#include <math.h>

TEST(greedy_and_ties) {
    size_t idx[8];
    fed_rng r = fed_rng_stream(1, 0);
    const float l[] = {0.5f, 2.0f, -1.0f, 2.0f};
    CHECK_INT(fed_gen_sample(l, 4, 0.0, 40, idx, &r), 1); /* a tie: the smaller id */
    CHECK_INT(fed_gen_sample(l, 4, 5.0, 1, idx, &r), 1);  /* top-1 is greedy at any temperature */
    const float one[] = {3.0f};
    CHECK_INT(fed_gen_sample(one, 1, 1.0, 0, idx, &r), 0);
}

/* Draws n ids from l[0..V) and counts them into c. */
static void draw(const float *l, size_t V, double temp, size_t k, size_t n, size_t *c) {
    size_t idx[8];
    fed_rng r = fed_rng_stream(7, 0);
    for (size_t i = 0; i < V; i++) c[i] = 0;
    for (size_t i = 0; i < n; i++) c[fed_gen_sample(l, V, temp, k, idx, &r)]++;
}

TEST(frequencies) {
    size_t c[4];
    /* softmax(0, ln 3) = (1/4, 3/4); ids at -100 are never drawn. */
    const float l[] = {0.0f, (float)log(3.0), -100.0f, -100.0f};
    draw(l, 4, 1.0, 0, 4000, c);
    CHECK(c[1] > 2850 && c[1] < 3150);
    CHECK_SIZE(c[0] + c[1], 4000);
    /* Temperature 2 halves the log-odds: softmax(0, ln 9 / 2) = (1/4, 3/4) again. */
    const float l9[] = {0.0f, (float)log(9.0), -3.0f, -3.0f};
    draw(l9, 4, 2.0, 2, 4000, c);
    CHECK(c[1] > 2850 && c[1] < 3150);
    CHECK_SIZE(c[2] + c[3], 0); /* top-2: ids 2 and 3 are out */
    /* top-2 over a tie for second place: the smaller id of the two is in. */
    const float t[] = {1.0f, 3.0f, 3.0f, 3.0f};
    draw(t, 4, 1.0, 2, 1000, c);
    CHECK(c[1] > 400 && c[2] > 400);
    CHECK_SIZE(c[1] + c[2], 1000);
}

/* A model of window T = 3 over 5 ids: an identity embedding and a head whose logit of
 * (i + 1) mod 5 is `scale` for input id i (scale 0: every logit 0, uniform draws). */
static fed_model *successor_model(float scale) {
    const char *spec = "{\"input\":[3],\"layers\":[{\"type\":\"embedding\",\"name\":\"e\","
                       "\"vocab\":5,\"dim\":5,\"pad\":true},{\"type\":\"linear\",\"name\":\"h\","
                       "\"out\":5}]}";
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) || fed_model_new(&m, a)) {
        fprintf(stderr, "  model: %s\n", fed_errmsg());
        fed_arch_destroy(&a);
        return NULL;
    }
    fed_arch_destroy(&a);
    float *p = fed_model_params(m);
    const fed_tensor *e = fed_model_find(m, "e.weight"), *w = fed_model_find(m, "h.weight"),
                     *b = fed_model_find(m, "h.bias");
    if (!e || !w || !b) {
        fed_model_destroy(&m);
        return NULL;
    }
    memset(p + e->offset, 0, e->numel * sizeof *p);
    memset(p + w->offset, 0, w->numel * sizeof *p);
    memset(p + b->offset, 0, b->numel * sizeof *p);
    for (size_t i = 0; i < 5; i++) {
        p[e->offset + i * 5 + i] = 1.0f;
        p[w->offset + ((i + 1) % 5) * 5 + i] = scale;
    }
    return m;
}

TEST(generation_slides_the_window) {
    fed_model *m = successor_model(10.0f);
    CHECK(m != NULL);
    if (!m) return;
    size_t T = 0, V = 0;
    CHECK_OK(fed_gen_shape(m, &T, &V));
    CHECK_SIZE(T, 3);
    CHECK_SIZE(V, 5);
    const int32_t prompt[] = {2};
    fed_gen_config g = {8, 0.0, 40, 0, 1};
    int32_t *out = NULL;
    size_t n = 0;
    CHECK_OK(fed_gen_run(m, prompt, 1, &g, &out, &n));
    CHECK_SIZE(n, 8);
    const int32_t want[] = {3, 4, 0, 1, 2, 3, 4, 0};
    for (size_t i = 0; out && i < 8; i++) CHECK_INT(out[i], want[i]);
    fed_free(out);
    /* A prompt longer than the window: only its last T ids count. */
    const int32_t longer[] = {0, 0, 0, 0, 4};
    CHECK_OK(fed_gen_run(m, longer, 5, &g, &out, &n));
    if (out) CHECK_INT(out[0], 0);
    fed_free(out);
    /* vocab 3: ids 3 and 4 are never drawn, whatever their logits. */
    fed_gen_config g3 = {1, 0.0, 0, 3, 1};
    const int32_t two[] = {2};
    CHECK_OK(fed_gen_run(m, two, 1, &g3, &out, &n));
    if (out) CHECK_INT(out[0], 0); /* logits (0, 0, 0, 10, 0) cut to 3: a tie, id 0 */
    fed_free(out);
    fed_model_destroy(&m);
}

TEST(same_seed_same_ids) {
    fed_model *m = successor_model(0.0f);
    if (!m) return;
    const int32_t prompt[] = {1, 2};
    fed_gen_config g = {20, 1.0, 0, 0, 42};
    int32_t *a = NULL, *b = NULL, *c = NULL;
    size_t na = 0, nb = 0, nc = 0;
    CHECK_OK(fed_gen_run(m, prompt, 2, &g, &a, &na));
    CHECK_OK(fed_gen_run(m, prompt, 2, &g, &b, &nb));
    g.seed = 43;
    CHECK_OK(fed_gen_run(m, prompt, 2, &g, &c, &nc));
    CHECK(a && b && c && na == 20 && nb == 20 && nc == 20);
    if (a && b && c) {
        CHECK(memcmp(a, b, 20 * sizeof *a) == 0);
        CHECK(memcmp(a, c, 20 * sizeof *a) != 0);
    }
    fed_free(a);
    fed_free(b);
    fed_free(c);
    fed_model_destroy(&m);
}

TEST(refusals) {
    fed_model *m = successor_model(1.0f);
    if (!m) return;
    int32_t *out = (int32_t *)1;
    size_t n = 9;
    fed_gen_config g = {4, 0.0, 0, 0, 1};
    CHECK_ERR(fed_gen_run(m, NULL, 0, &g, &out, &n), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "an empty prompt: nothing to continue");
    CHECK(out == NULL && n == 0);
    const int32_t bad[] = {1, 5};
    CHECK_ERR(fed_gen_run(m, bad, 2, &g, &out, &n), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "prompt id 5 at 1 is not in [0, 5)");
    fed_model_destroy(&m);
    fed_arch *a = NULL;
    CHECK_OK(fed_arch_parse(&a, "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3}]}"));
    if (a && !fed_model_new(&m, a)) {
        size_t T, V;
        CHECK_ERR(fed_gen_shape(m, &T, &V), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), "no language model: its input must be [T] token ids");
    }
    fed_model_destroy(&m);
    fed_arch_destroy(&a);
}

int main(void) {
    RUN(greedy_and_ties);
    RUN(frequencies);
    RUN(generation_slides_the_window);
    RUN(same_seed_same_ids);
    RUN(refusals);
    return test_report();
}
