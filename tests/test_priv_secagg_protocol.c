/* Tests of the secure-aggregation round protocol (privacy/secagg.h), all in memory with
 * real keys, shares and masks: exact sums for 3..50 clients over all-pairs and sparse
 * graphs, every dropout pattern for small rounds, random ones for larger rounds, dropouts
 * during unmasking, clean aborts below the threshold, the refusal to reveal both secrets
 * of one neighbour, tampered, replayed and re-addressed envelopes, substituted keys,
 * malformed messages, parameter validation, the uniformity of a masked input's bytes,
 * and allocation failures. */
#include "privacy/secagg.h"

#include "core/alloc_internal.h"
#include "tests/test.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- Helpers ------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void) { /* splitmix64: test data only */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static float rnd_float(float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rnd() >> 11) / 9007199254740992.0);
}

/* Client u's rounding key: the tests reproduce each client's fixed-point integers. */
static void rounding_key(uint8_t key[32], uint32_t u) {
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(u * 131u + (unsigned)i * 7u + 1u);
}

static float *random_inputs(size_t n, size_t len, float range) {
    float *x = malloc(n * len * sizeof *x);
    for (size_t i = 0; i < n * len; i++) x[i] = rnd_float(-range, range);
    return x;
}

/* A toy "signature" standing in for the TLS identity: FNV-1a over the block keyed by the
 * signer's id. It only has to be something the server cannot produce for new keys in
 * these tests. */
static void toy_sign(uint8_t sig[8], uint32_t id, const uint8_t *block, size_t len) {
    uint64_t h = 0xcbf29ce484222325u ^ ((uint64_t)id * 0x9e3779b97f4a7c15u);
    for (size_t i = 0; i < len; i++) h = (h ^ block[i]) * 0x100000001b3u;
    for (int i = 0; i < 8; i++) sig[i] = (uint8_t)(h >> (8 * i));
}

static int verify_calls;

static fed_err toy_verify(void *ctx, uint32_t id, const uint8_t *block, size_t len,
                          const uint8_t *sig, size_t sig_len) {
    (void)ctx;
    verify_calls++;
    uint8_t want[8];
    toy_sign(want, id, block, len);
    if (len != FED_SA_SIGNED_LEN || sig_len != 8 || memcmp(sig, want, 8) != 0)
        return fed_errorf(FED_EAUTH, "toy signature of client %u does not match", (unsigned)id);
    return FED_OK;
}

static void params_for(fed_sa_params *p, uint32_t n, uint32_t degree, size_t len, uint64_t round) {
    fed_sa_params_default(p, n, len);
    p->degree = degree;
    p->threshold = (fed_sa_degree(p) + 1) / 2 + 1; /* the smallest valid threshold */
    p->round = round;
    for (int i = 0; i < 32; i++) p->graph_seed[i] = (uint8_t)(round * 17u + (unsigned)i);
}

/* One whole round in memory. sends[u] = how many messages client u sends before it
 * drops out: 0 none, 1 ADVERTISE, 2 + SHARES, 3 + MASKED, 4 all (+ UNMASK_REPLY).
 * Clients the server excludes simply stop. masked[u] is set for the clients whose masked
 * input the server accepted. Returns the first error of any call (FED_ENOTFOUND from the
 * server, meaning "excluded", is not an error), or finalize's result. */
static fed_err run_round(const fed_sa_params *p, const uint8_t *sends, const float *x, float *sum,
                         uint32_t *fixed, size_t *survivors, uint8_t *masked) {
    const uint32_t n = p->n;
    fed_sa_client **c = calloc(n, sizeof *c);
    bool *in = calloc(n, sizeof *in);
    fed_sa_server *s = NULL;
    uint8_t *m = NULL, *r = NULL;
    size_t ml = 0, rl = 0;
    memset(masked, 0, n);
    *survivors = 0;
    fed_err err = fed_sa_server_new(&s, p);
    for (uint32_t u = 0; err == FED_OK && u < n; u++) err = fed_sa_client_new(&c[u], p, u);
    for (uint32_t u = 0; err == FED_OK && u < n; u++) {
        if (sends[u] < 1) continue;
        uint8_t block[FED_SA_SIGNED_LEN], sig[8];
        fed_sa_client_keys_to_sign(c[u], block);
        toy_sign(sig, u, block, sizeof block);
        err = fed_sa_client_advertise(c[u], sig, sizeof sig, &m, &ml);
        if (err == FED_OK) err = fed_sa_server_add_keys(s, u, m, ml, toy_verify, NULL);
        fed_free(m);
        m = NULL;
        in[u] = true;
    }
    for (int phase = 2; phase <= 4 && err == FED_OK; phase++) {
        for (uint32_t u = 0; err == FED_OK && u < n; u++) {
            if (!in[u]) continue;
            if (phase == 2) err = fed_sa_server_keys_for(s, u, &m, &ml);
            if (phase == 3) err = fed_sa_server_shares_for(s, u, &m, &ml);
            if (phase == 4) err = fed_sa_server_unmask_for(s, u, &m, &ml);
            if (err == FED_ENOTFOUND || (err == FED_OK && sends[u] < phase)) {
                in[u] = false;
                err = FED_OK;
                fed_free(m);
                m = NULL;
                continue;
            }
            if (err != FED_OK) break;
            if (phase == 2) err = fed_sa_client_share(c[u], m, ml, toy_verify, NULL, &r, &rl);
            if (phase == 3) {
                uint8_t key[32];
                rounding_key(key, u);
                err = fed_sa_client_mask(c[u], m, ml, x + (size_t)u * p->len, p->len, key, &r, &rl);
            }
            if (phase == 4) err = fed_sa_client_unmask(c[u], m, ml, &r, &rl);
            fed_free(m);
            m = NULL;
            if (err == FED_OK && phase == 2) err = fed_sa_server_add_shares(s, u, r, rl);
            if (err == FED_OK && phase == 3) err = fed_sa_server_add_masked(s, u, r, rl);
            if (err == FED_OK && phase == 4) err = fed_sa_server_add_unmask(s, u, r, rl);
            if (err == FED_OK && phase == 3) masked[u] = 1;
            fed_free(r);
            r = NULL;
        }
    }
    if (err == FED_OK) err = fed_sa_server_finalize(s, sum, fixed, p->len, survivors);
    for (uint32_t u = 0; u < n; u++) fed_sa_client_destroy(&c[u]);
    fed_sa_server_destroy(&s);
    CHECK(s == NULL);
    free(c);
    free(in);
    return err;
}

/* The modular sum of the fixed-point integers of the clients in set. */
static void plain_sum(uint32_t *out, const fed_sa_params *p, const float *x, const uint8_t *set) {
    uint32_t *q = malloc(p->len * sizeof *q);
    memset(out, 0, p->len * sizeof *out);
    for (uint32_t u = 0; u < p->n; u++) {
        if (!set[u]) continue;
        uint8_t key[32];
        rounding_key(key, u);
        CHECK_OK(
            fed_sa_quantize(q, x + (size_t)u * p->len, p->len, p->clip_range, p->quant_range, key));
        for (size_t i = 0; i < p->len; i++) out[i] += q[i];
    }
    free(q);
}

/* Runs a round and checks its outcome: FED_OK with the exact sum of the survivors, or
 * expect's error. Returns the number of survivors (0 on failure). */
static size_t check_round(const fed_sa_params *p, const uint8_t *sends, const float *x,
                          fed_err expect) {
    float *sum = malloc(p->len * sizeof *sum), *want = malloc(p->len * sizeof *want);
    uint32_t *fixed = malloc(p->len * sizeof *fixed), *plain = malloc(p->len * sizeof *plain);
    uint8_t *masked = malloc(p->n);
    size_t survivors = 0, count = 0;
    fed_err err = run_round(p, sends, x, sum, fixed, &survivors, masked);
    if (err != expect) {
        test_fail_(__FILE__, __LINE__);
        fprintf(stderr, "n %u degree %u t %u: got %s (%s), expected %s; sends", (unsigned)p->n,
                (unsigned)p->degree, (unsigned)p->threshold, fed_errname(err), fed_errdetail(err),
                fed_errname(expect));
        for (uint32_t u = 0; u < p->n; u++) fprintf(stderr, " %u", (unsigned)sends[u]);
        fprintf(stderr, "\n");
    } else {
        test_passed_++;
    }
    if (err == FED_OK && expect == FED_OK) {
        for (uint32_t u = 0; u < p->n; u++) count += masked[u];
        CHECK_SIZE(survivors, count);
        plain_sum(plain, p, x, masked);
        CHECK_MEM(fixed, plain, p->len * sizeof *fixed);
        CHECK_OK(fed_sa_dequantize_sum(want, plain, p->len, count, p->clip_range, p->quant_range));
        CHECK_MEM(sum, want, p->len * sizeof *sum);
        /* Against the float sum of the clipped inputs: one rounding step per client. */
        const double step = 2 * p->clip_range / p->quant_range, c = p->clip_range;
        double worst = 0;
        for (size_t i = 0; i < p->len; i++) {
            double exact = 0;
            for (uint32_t u = 0; u < p->n; u++) {
                if (!masked[u]) continue;
                double v = (double)x[(size_t)u * p->len + i];
                exact += v < -c ? -c : v > c ? c : v;
            }
            double d = fabs((double)sum[i] - exact);
            if (d > worst) worst = d;
        }
        CHECK(worst <= (double)count * step + 1e-4);
    }
    free(sum);
    free(want);
    free(fixed);
    free(plain);
    free(masked);
    return err == FED_OK ? survivors : 0;
}

/* Whether a round whose clients all advertised and shared succeeds when those with
 * sends >= 3 survive and those with sends == 4 answer: the conditions of secagg.h
 * computed independently from the graph. */
static bool predict(const fed_sa_params *p, const uint8_t *sends) {
    const uint32_t n = p->n, k = fed_sa_degree(p), t = p->threshold;
    uint32_t *nb = calloc(k, sizeof *nb), alive = 0;
    bool ok = true;
    for (uint32_t u = 0; u < n; u++) alive += sends[u] >= 3;
    if (alive < t) ok = false;
    for (uint32_t u = 0; ok && u < n; u++) {
        CHECK_OK(fed_sa_neighbours(nb, p, u));
        uint32_t answered = 0, alive_nb = 0;
        for (uint32_t j = 0; j < k; j++) {
            answered += sends[nb[j]] >= 4;
            alive_nb += sends[nb[j]] >= 3;
        }
        if (sends[u] >= 3 && answered + (sends[u] >= 4) < t) ok = false;
        if (sends[u] < 3 && alive_nb > 0 && answered < t) ok = false;
    }
    free(nb);
    return ok;
}

/* ---- Parameters and graph ----------------------------------------------------------- */

TEST(params_are_validated) {
    fed_sa_params p;
    fed_sa_params_default(&p, 10, 100);
    CHECK_OK(fed_sa_params_check(&p));
    CHECK_INT(p.degree, 9);
    CHECK_INT(p.threshold, 6); /* 10 holders: 6 > 5 */
    CHECK_NEAR(p.clip_range, 8.0, 0);
    CHECK_INT(p.quant_range, 1u << 22);
    fed_sa_params_default(&p, 100, 100);
    CHECK_INT(p.degree, FED_SA_DEFAULT_DEGREE);
    CHECK_OK(fed_sa_params_check(&p));

    struct {
        uint32_t n, degree, t;
        double clip;
        uint32_t q;
        size_t len;
        const char *field;
    } bad[] = {
        {1, 1, 1, 8, 1u << 22, 10, "n"},
        {0, 1, 1, 8, 1u << 22, 10, "n"},
        {FED_SA_CLIENTS_MAX + 1, 8, 5, 8, 4, 10, "n"},
        {10, 0, 1, 8, 1u << 22, 10, "degree"},
        {10, 9, 5, 8, 1u << 22, 10, "threshold"},  /* 10 holders: 5 is not a majority */
        {10, 9, 11, 8, 1u << 22, 10, "threshold"}, /* more than the holders */
        {10, 9, 0, 8, 1u << 22, 10, "threshold"},
        {10, 4, 2, 8, 1u << 22, 10, "threshold"}, /* 5 holders */
        {10, 9, 6, 0, 1u << 22, 10, "clip_range"},
        {10, 9, 6, -1, 1u << 22, 10, "clip_range"},
        {10, 9, 6, (double)NAN, 1u << 22, 10, "clip_range"},
        {10, 9, 6, (double)INFINITY, 1u << 22, 10, "clip_range"},
        {10, 9, 6, 8, 0, 10, "quant_range"},
        {1024, 30, 17, 8, 1u << 22, 10, "quant_range"}, /* 1024 * 2^22 = 2^32 wraps */
        {10, 9, 6, 8, 1u << 22, 0, "len"},
        {10, 9, 6, 8, 1u << 22, (size_t)FED_SA_LEN_MAX + 1, "len"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fed_sa_params_default(&p, 10, 10);
        p.n = bad[i].n;
        p.degree = bad[i].degree;
        p.threshold = bad[i].t;
        p.clip_range = bad[i].clip;
        p.quant_range = bad[i].q;
        p.len = bad[i].len;
        CHECK_ERR(fed_sa_params_check(&p), FED_EINVAL);
        CHECK_CONTAINS(fed_errmsg(), bad[i].field);
        fed_sa_client *c = NULL;
        fed_sa_server *s = NULL;
        CHECK_ERR(fed_sa_client_new(&c, &p, 0), FED_EINVAL);
        CHECK_ERR(fed_sa_server_new(&s, &p), FED_EINVAL);
        CHECK(c == NULL && s == NULL);
    }
    CHECK_ERR(fed_sa_params_check(NULL), FED_EINVAL);
    /* 1023 clients at q = 2^22 still fit below 2^32. */
    fed_sa_params_default(&p, 1023, 10);
    CHECK_OK(fed_sa_params_check(&p));
    fed_sa_client *c = NULL;
    fed_sa_params_default(&p, 10, 10);
    CHECK_ERR(fed_sa_client_new(&c, &p, 10), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "id");
}

TEST(graph_is_symmetric_regular_and_seeded) {
    static const uint32_t ns[] = {2, 3, 4, 5, 7, 10, 16, 25, 50, 101};
    static const uint32_t ks[] = {1, 2, 3, 4, 5, 7, 8, 1000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++) {
            fed_sa_params p;
            params_for(&p, ns[a], ks[b], 10, 3);
            const uint32_t n = p.n, k = fed_sa_degree(&p);
            uint32_t want = ks[b] < n - 1 ? ks[b] : n - 1;
            if (want % 2 == 1 && n % 2 == 1) want++;
            CHECK_INT(k, want);
            uint32_t *nb = malloc((size_t)n * k * sizeof *nb);
            uint8_t *adj = calloc((size_t)n * n, 1);
            bool ok = true;
            for (uint32_t u = 0; u < n; u++) {
                CHECK_OK(fed_sa_neighbours(nb + (size_t)u * k, &p, u));
                for (uint32_t j = 0; j < k; j++) {
                    uint32_t v = nb[(size_t)u * k + j];
                    ok &= v < n && v != u && (j == 0 || v > nb[(size_t)u * k + j - 1]);
                    if (v < n) adj[(size_t)u * n + v] = 1;
                }
            }
            for (uint32_t u = 0; u < n; u++)
                for (uint32_t v = 0; v < n; v++)
                    ok &= adj[(size_t)u * n + v] == adj[(size_t)v * n + u];
            CHECK(ok);
            if (k == n - 1) { /* all pairs */
                size_t edges = 0;
                for (size_t i = 0; i < (size_t)n * n; i++) edges += adj[i];
                CHECK_SIZE(edges, (size_t)n * (n - 1));
            }
            /* Another seed gives another graph (when there is a choice to make). */
            if (n >= 16 && k <= 8) {
                uint32_t *other = malloc((size_t)k * sizeof *other);
                size_t differ = 0;
                p.graph_seed[0] ^= 1;
                for (uint32_t u = 0; u < n; u++) {
                    CHECK_OK(fed_sa_neighbours(other, &p, u));
                    differ += memcmp(other, nb + (size_t)u * k, k * sizeof *other) != 0;
                }
                CHECK(differ > 0);
                free(other);
            }
            free(nb);
            free(adj);
        }
    }
    fed_sa_params p;
    params_for(&p, 10, 4, 10, 3);
    uint32_t row[4];
    CHECK_ERR(fed_sa_neighbours(row, &p, 10), FED_EINVAL);
}

/* ---- Exact sums ----------------------------------------------------------------------- */

TEST(sums_are_exact_without_dropouts) {
    static const uint32_t ns[] = {3, 4, 5, 7, 10, 16, 25, 50};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const uint32_t n = ns[a];
        const uint32_t sparse = n <= 5 ? 2 : n < 16 ? 4 : n % 2 == 0 ? 7 : 8;
        const uint32_t degrees[2] = {n - 1, sparse};
        for (int d = 0; d < 2; d++) {
            fed_sa_params p;
            params_for(&p, n, degrees[d], 1000, 100 + n);
            float *x = random_inputs(n, p.len, 10.0f); /* some beyond the clip range */
            uint8_t *sends = malloc(n);
            memset(sends, 4, n);
            CHECK_SIZE(check_round(&p, sends, x, FED_OK), n);
            free(x);
            free(sends);
        }
    }
    /* One long vector, and a higher threshold. */
    fed_sa_params p;
    params_for(&p, 6, 5, 100003, 7);
    p.threshold = 6;
    float *x = random_inputs(6, p.len, 1.0f);
    uint8_t sends[6] = {4, 4, 4, 4, 4, 4};
    CHECK_SIZE(check_round(&p, sends, x, FED_OK), 6);
    free(x);
}

/* ---- Dropouts --------------------------------------------------------------------------- */

/* Every subset of survivors after sharing (the others shared, then dropped). */
static void all_patterns(uint32_t n, uint32_t degree, uint32_t t) {
    fed_sa_params p;
    params_for(&p, n, degree, 64, 1000 + n * 10 + degree);
    if (t != 0) p.threshold = t;
    float *x = random_inputs(n, p.len, 4.0f);
    uint8_t sends[8];
    int ok = 0, aborted = 0;
    for (uint32_t mask = 0; mask < (1u << n); mask++) {
        uint32_t alive = 0;
        for (uint32_t u = 0; u < n; u++) {
            sends[u] = (mask >> u) & 1 ? 4 : 2;
            alive += (mask >> u) & 1;
        }
        bool expect = predict(&p, sends);
        if (degree >= n - 1) CHECK(expect == (alive >= p.threshold)); /* all pairs: t survivors */
        size_t got = check_round(&p, sends, x, expect ? FED_OK : FED_EAGAIN);
        if (expect) CHECK_SIZE(got, alive);
        ok += expect;
        aborted += !expect;
    }
    fprintf(stderr, "  n %u degree %u t %u: %d patterns recovered, %d aborted\n", (unsigned)n,
            (unsigned)degree, (unsigned)p.threshold, ok, aborted);
    free(x);
}

TEST(every_dropout_pattern_after_sharing_small_n) {
    for (uint32_t n = 3; n <= 6; n++) all_patterns(n, n - 1, 0);
    all_patterns(5, 4, 4); /* a higher threshold tolerates fewer dropouts */
    all_patterns(6, 2, 0); /* a ring */
    all_patterns(6, 3, 0); /* odd degree: the opposite client too */
    all_patterns(5, 2, 0);
}

TEST(random_dropouts_larger_n) {
    static const uint32_t ns[] = {10, 16, 25, 50};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const uint32_t n = ns[a];
        for (int d = 0; d < 2; d++) {
            fed_sa_params p;
            params_for(&p, n, d == 0 ? n - 1 : 8, 200, 5000 + n + (uint32_t)d);
            float *x = random_inputs(n, p.len, 3.0f);
            uint8_t *sends = malloc(n);
            int ok = 0, aborted = 0;
            for (int trial = 0; trial < 12; trial++) {
                /* Drop after sharing or during unmasking, at rates from 0 to 40%. */
                uint64_t rate = (uint64_t)trial * 3;
                for (uint32_t u = 0; u < n; u++) {
                    uint64_t r = rnd() % 100;
                    sends[u] = r < rate ? 2 : r < 2 * rate ? 3 : 4;
                }
                bool expect = predict(&p, sends);
                check_round(&p, sends, x, expect ? FED_OK : FED_EAGAIN);
                ok += expect;
                aborted += !expect;
            }
            fprintf(stderr, "  n %u degree %u t %u: %d recovered, %d aborted\n", (unsigned)n,
                    (unsigned)fed_sa_degree(&p), (unsigned)p.threshold, ok, aborted);
            free(sends);
            free(x);
        }
    }
}

TEST(dropouts_during_unmasking) {
    fed_sa_params p;
    params_for(&p, 10, 9, 300, 77); /* all pairs, t = 6 */
    CHECK_INT(p.threshold, 6);
    float *x = random_inputs(10, p.len, 2.0f);
    /* Two drop after sharing, two more never answer: 6 answers reach t for everyone. */
    uint8_t sends[10] = {4, 2, 4, 3, 4, 2, 4, 4, 3, 4};
    CHECK_SIZE(check_round(&p, sends, x, FED_OK), 8);
    /* A third silent survivor leaves 5 answers: abort. */
    sends[9] = 3;
    CHECK_SIZE(check_round(&p, sends, x, FED_EAGAIN), 0);
    CHECK_CONTAINS(fed_errmsg(), "threshold 6");
    free(x);
}

TEST(dropouts_in_early_phases) {
    fed_sa_params p;
    params_for(&p, 7, 6, 100, 31); /* all pairs, t = 4 */
    float *x = random_inputs(7, p.len, 2.0f);
    /* One never advertises, one advertises only, one shares only: 4 survivors. */
    uint8_t sends[7] = {4, 0, 4, 1, 4, 2, 4};
    CHECK_SIZE(check_round(&p, sends, x, FED_OK), 4);
    /* Too few advertise: the server aborts when it ends phase 1. */
    uint8_t few[7] = {4, 0, 0, 0, 0, 4, 4};
    CHECK_SIZE(check_round(&p, few, x, FED_EAGAIN), 0);
    CHECK_CONTAINS(fed_errmsg(), "advertised");
    /* Too few share. */
    uint8_t few2[7] = {4, 1, 1, 1, 1, 4, 4};
    CHECK_SIZE(check_round(&p, few2, x, FED_EAGAIN), 0);
    /* A ring (t = 2 of 3 holders): both neighbours of client 0 never advertise, so the
     * server excludes client 0 when phase 1 ends instead of letting it fail later. */
    params_for(&p, 10, 2, 100, 33);
    CHECK_INT(p.threshold, 2);
    float *z = random_inputs(10, p.len, 2.0f);
    uint32_t ring[2];
    CHECK_OK(fed_sa_neighbours(ring, &p, 0));
    uint8_t sends10[10];
    memset(sends10, 4, sizeof sends10);
    sends10[ring[0]] = sends10[ring[1]] = 0;
    CHECK_SIZE(check_round(&p, sends10, z, FED_OK), 7);
    free(z);
    /* Sparse graph: the server excludes a client whose neighbours vanished; the rest of
     * the round is consistent either way (exact sum, or a clean abort). */
    params_for(&p, 16, 4, 100, 32); /* t = 3 of 5 holders */
    float *y = random_inputs(16, p.len, 2.0f);
    uint8_t sends16[16];
    int ok = 0;
    for (int trial = 0; trial < 20; trial++) {
        for (uint32_t u = 0; u < 16; u++) {
            uint64_t r = rnd() % 100;
            sends16[u] = r < 10 ? 0 : r < 20 ? 1 : r < 25 ? 2 : 4;
        }
        float sum[100];
        uint32_t fixed[100];
        uint8_t masked[16];
        size_t survivors = 0;
        fed_err err = run_round(&p, sends16, y, sum, fixed, &survivors, masked);
        CHECK(err == FED_OK || err == FED_EAGAIN);
        if (err == FED_OK) {
            uint32_t plain[100];
            plain_sum(plain, &p, y, masked);
            CHECK_MEM(fixed, plain, sizeof plain);
            ok++;
        }
    }
    CHECK(ok > 0);
    free(x);
    free(y);
}

/* ---- A round driven step by step ---------------------------------------------------- */

typedef struct stepper {
    fed_sa_params p;
    fed_sa_client *c[8];
    fed_sa_server *s;
    uint8_t *msg[8]; /* the last server message to each client */
    size_t len[8];
} stepper;

static void step_free_msgs(stepper *st) {
    for (uint32_t u = 0; u < st->p.n; u++) {
        fed_free(st->msg[u]);
        st->msg[u] = NULL;
    }
}

static void step_destroy(stepper *st) {
    step_free_msgs(st);
    for (uint32_t u = 0; u < st->p.n; u++) fed_sa_client_destroy(&st->c[u]);
    fed_sa_server_destroy(&st->s);
}

/* Phases 1 and 2 for all clients; st->msg[u] is then u's DELIVERY. */
static void step_to_delivery(stepper *st, uint32_t n, uint64_t round) {
    memset(st, 0, sizeof *st);
    params_for(&st->p, n, n - 1, 50, round);
    CHECK_OK(fed_sa_server_new(&st->s, &st->p));
    uint8_t *m = NULL;
    size_t ml = 0;
    for (uint32_t u = 0; u < n; u++) {
        CHECK_OK(fed_sa_client_new(&st->c[u], &st->p, u));
        CHECK_OK(fed_sa_client_advertise(st->c[u], NULL, 0, &m, &ml));
        CHECK_OK(fed_sa_server_add_keys(st->s, u, m, ml, NULL, NULL));
        fed_free(m);
    }
    for (uint32_t u = 0; u < n; u++)
        CHECK_OK(fed_sa_server_keys_for(st->s, u, &st->msg[u], &st->len[u]));
    for (uint32_t u = 0; u < n; u++) {
        CHECK_OK(fed_sa_client_share(st->c[u], st->msg[u], st->len[u], NULL, NULL, &m, &ml));
        CHECK_OK(fed_sa_server_add_shares(st->s, u, m, ml));
        fed_free(m);
    }
    step_free_msgs(st);
    for (uint32_t u = 0; u < n; u++)
        CHECK_OK(fed_sa_server_shares_for(st->s, u, &st->msg[u], &st->len[u]));
}

/* Phase 3 for all clients; st->msg[u] is then u's UNMASK_REQUEST. */
static void step_to_unmask(stepper *st, const float *x) {
    uint8_t *m = NULL;
    size_t ml = 0;
    for (uint32_t u = 0; u < st->p.n; u++) {
        CHECK_OK(fed_sa_client_mask(st->c[u], st->msg[u], st->len[u], x + (size_t)u * st->p.len,
                                    st->p.len, NULL, &m, &ml));
        CHECK_OK(fed_sa_server_add_masked(st->s, u, m, ml));
        fed_free(m);
    }
    step_free_msgs(st);
    for (uint32_t u = 0; u < st->p.n; u++)
        CHECK_OK(fed_sa_server_unmask_for(st->s, u, &st->msg[u], &st->len[u]));
}

/* Offset of DELIVERY entry i's envelope. */
static size_t env_at(size_t i) {
    return FED_SA_HEADER_LEN + 4 + i * (4 + FED_SA_ENVELOPE_LEN) + 4;
}

TEST(tampered_replayed_and_readdressed_envelopes_are_rejected) {
    stepper st, old;
    step_to_delivery(&old, 4, 41);
    step_to_delivery(&st, 4, 42);
    float x[4 * 50] = {0};
    uint8_t *m = NULL;
    size_t ml = 0;
    uint8_t *d = malloc(st.len[0]);
    /* Client 0 gets envelopes from 1, 2, 3. Flip single bits all over the envelopes. */
    size_t rejected = 0, tries = 0;
    for (size_t i = 0; i < 3; i++) {
        for (size_t b = 0; b < FED_SA_ENVELOPE_LEN; b += 7) {
            memcpy(d, st.msg[0], st.len[0]);
            d[env_at(i) + b] ^= (uint8_t)(1u << (b % 8));
            tries++;
            rejected +=
                fed_sa_client_mask(st.c[0], d, st.len[0], x, 50, NULL, &m, &ml) == FED_EAUTH;
        }
    }
    CHECK_SIZE(rejected, tries);
    CHECK(m == NULL);
    /* Replayed from the previous round (same sender and recipient) in a fresh header. */
    memcpy(d, st.msg[0], st.len[0]);
    memcpy(d + env_at(1), old.msg[0] + env_at(1), FED_SA_ENVELOPE_LEN);
    CHECK_ERR(fed_sa_client_mask(st.c[0], d, st.len[0], x, 50, NULL, &m, &ml), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "entries[1].envelope");
    /* Re-addressed: client 1's envelope to client 2 handed to client 0 as if 1 sent it to 0
     * (client 2's DELIVERY lists senders 0, 1, 3: entry 1 is from client 1). */
    memcpy(d, st.msg[0], st.len[0]);
    memcpy(d + env_at(0), st.msg[2] + env_at(1), FED_SA_ENVELOPE_LEN);
    CHECK_ERR(fed_sa_client_mask(st.c[0], d, st.len[0], x, 50, NULL, &m, &ml), FED_EAUTH);
    /* Two envelopes swapped between senders. */
    memcpy(d, st.msg[0], st.len[0]);
    memcpy(d + env_at(0), st.msg[0] + env_at(1), FED_SA_ENVELOPE_LEN);
    memcpy(d + env_at(1), st.msg[0] + env_at(0), FED_SA_ENVELOPE_LEN);
    CHECK_ERR(fed_sa_client_mask(st.c[0], d, st.len[0], x, 50, NULL, &m, &ml), FED_EAUTH);
    /* A whole message replayed from the previous round: its header names that round. */
    CHECK_ERR(fed_sa_client_mask(st.c[0], old.msg[0], old.len[0], x, 50, NULL, &m, &ml),
              FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "round");
    /* Client 1's DELIVERY sent to client 0. */
    CHECK_ERR(fed_sa_client_mask(st.c[0], st.msg[1], st.len[1], x, 50, NULL, &m, &ml), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "client");
    /* After all that, the genuine message still works and the round completes. */
    step_to_unmask(&st, x);
    for (uint32_t u = 0; u < 4; u++) {
        CHECK_OK(fed_sa_client_unmask(st.c[u], st.msg[u], st.len[u], &m, &ml));
        CHECK_OK(fed_sa_server_add_unmask(st.s, u, m, ml));
        fed_free(m);
    }
    float sum[50];
    size_t survivors = 0;
    CHECK_OK(fed_sa_server_finalize(st.s, sum, NULL, 50, &survivors));
    CHECK_SIZE(survivors, 4);
    CHECK_NEAR(sum[7], 0.0, 4 * 16.0 / (1 << 22) + 1e-5);
    free(d);
    step_destroy(&st);
    step_destroy(&old);
}

/* An UNMASK_REQUEST for client u. */
static uint8_t *request(size_t *len, uint32_t u, uint64_t round, const uint32_t *alive, uint32_t na,
                        const uint32_t *dropped, uint32_t nd) {
    *len = FED_SA_HEADER_LEN + 8 + 4 * (size_t)(na + nd);
    uint8_t *m = calloc(1, *len), *w = m + FED_SA_HEADER_LEN + 8;
    m[0] = FED_SA_MSG_UNMASK_REQUEST;
    m[1] = 1;
    for (int i = 0; i < 4; i++) m[4 + i] = (uint8_t)(u >> (8 * i));
    for (int i = 0; i < 8; i++) m[8 + i] = (uint8_t)(round >> (8 * i));
    for (int i = 0; i < 4; i++) m[16 + i] = (uint8_t)(na >> (8 * i));
    for (int i = 0; i < 4; i++) m[20 + i] = (uint8_t)(nd >> (8 * i));
    for (uint32_t i = 0; i < na + nd; i++, w += 4) {
        uint32_t v = i < na ? alive[i] : dropped[i - na];
        for (int b = 0; b < 4; b++) w[b] = (uint8_t)(v >> (8 * b));
    }
    return m;
}

TEST(a_client_never_reveals_both_secrets_of_a_neighbour) {
    stepper st;
    step_to_delivery(&st, 5, 9);
    float x[5 * 50] = {0};
    step_to_unmask(&st, x);
    uint8_t *m = NULL, *req = NULL;
    size_t ml = 0, rl = 0;
    /* Neighbour 2 both alive and dropped. */
    const uint32_t alive[] = {1, 2}, dropped[] = {2, 3}, alive2[] = {1, 2, 3, 4}, none[] = {0};
    req = request(&rl, 0, 9, alive, 2, dropped, 2);
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "both");
    CHECK(m == NULL);
    free(req);
    /* Duplicates, out of order, itself, a non-participant: refused. */
    const uint32_t dup[] = {1, 1}, rev[] = {3, 1}, self[] = {0}, far[] = {7};
    req = request(&rl, 0, 9, dup, 2, none, 0);
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    free(req);
    req = request(&rl, 0, 9, rev, 2, none, 0);
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    free(req);
    req = request(&rl, 0, 9, self, 1, none, 0);
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    free(req);
    req = request(&rl, 0, 9, none, 0, far, 1);
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    free(req);
    /* The server's genuine request is answered, then never another. */
    CHECK_OK(fed_sa_client_unmask(st.c[0], st.msg[0], st.len[0], &m, &ml));
    CHECK_OK(fed_sa_server_add_unmask(st.s, 0, m, ml));
    CHECK_ERR(fed_sa_server_add_unmask(st.s, 0, m, ml), FED_EPROTO); /* duplicate */
    CHECK_CONTAINS(fed_errmsg(), "already");
    fed_free(m);
    m = NULL;
    req = request(&rl, 0, 9, none, 0, alive2, 4); /* now "everyone dropped" */
    CHECK_ERR(fed_sa_client_unmask(st.c[0], req, rl, &m, &ml), FED_EPROTO);
    CHECK(m == NULL);
    free(req);
    step_destroy(&st);
}

TEST(substituted_keys_and_signatures_are_rejected) {
    fed_sa_params p;
    params_for(&p, 3, 2, 10, 5);
    fed_sa_server *s = NULL;
    fed_sa_client *c[3] = {NULL, NULL, NULL};
    uint8_t *m[3] = {NULL, NULL, NULL}, *out = NULL;
    size_t ml[3] = {0, 0, 0}, ol = 0;
    CHECK_OK(fed_sa_server_new(&s, &p));
    for (uint32_t u = 0; u < 3; u++) {
        uint8_t block[FED_SA_SIGNED_LEN], sig[8];
        CHECK_OK(fed_sa_client_new(&c[u], &p, u));
        fed_sa_client_keys_to_sign(c[u], block);
        toy_sign(sig, u, block, sizeof block);
        CHECK_OK(fed_sa_client_advertise(c[u], sig, sizeof sig, &m[u], &ml[u]));
    }
    CHECK_ERR(fed_sa_client_advertise(c[0], NULL, 0, &out, &ol), FED_EPROTO); /* twice */
    /* The server checks signatures too: a key swapped in transit is refused. */
    uint8_t *bad = malloc(ml[0]);
    memcpy(bad, m[0], ml[0]);
    bad[FED_SA_HEADER_LEN + 40] ^= 1; /* s_pub */
    CHECK_ERR(fed_sa_server_add_keys(s, 0, bad, ml[0], toy_verify, NULL), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "client 0");
    /* A low-order point as a key. */
    memset(bad + FED_SA_HEADER_LEN, 0, FED_SA_KEY_LEN);
    CHECK_ERR(fed_sa_server_add_keys(s, 0, bad, ml[0], NULL, NULL), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "c_pub");
    free(bad);
    CHECK_ERR(fed_sa_server_add_keys(s, 3, m[0], ml[0], NULL, NULL), FED_EINVAL);
    CHECK_ERR(fed_sa_server_add_keys(s, 1, m[0], ml[0], NULL, NULL), FED_EPROTO); /* id */
    for (uint32_t u = 0; u < 3; u++) {
        CHECK_OK(fed_sa_server_add_keys(s, u, m[u], ml[u], toy_verify, NULL));
        fed_free(m[u]);
        m[u] = NULL;
    }
    CHECK_ERR(fed_sa_server_add_keys(s, 0, m[0], ml[0], NULL, NULL), FED_EPROTO); /* twice */
    for (uint32_t u = 0; u < 3; u++) CHECK_OK(fed_sa_server_keys_for(s, u, &m[u], &ml[u]));
    /* A malicious coordinator substitutes neighbour 2's mask key in client 0's list:
     * the signature no longer verifies. Entry 1 (client 2) starts after entry 0. */
    size_t e1 = FED_SA_HEADER_LEN + 4 + (4 + FED_SA_KEYS_LEN + 4 + 8);
    uint8_t *sub = malloc(ml[0]);
    memcpy(sub, m[0], ml[0]);
    sub[e1 + 4 + FED_SA_KEY_LEN + 3] ^= 0x10;
    verify_calls = 0;
    CHECK_ERR(fed_sa_client_share(c[0], sub, ml[0], toy_verify, NULL, &out, &ol), FED_EAUTH);
    CHECK_CONTAINS(fed_errmsg(), "client 2");
    CHECK_INT(verify_calls, 2);
    /* ... and a tampered signature. */
    memcpy(sub, m[0], ml[0]);
    sub[e1 + 4 + FED_SA_KEYS_LEN + 4] ^= 1;
    CHECK_ERR(fed_sa_client_share(c[0], sub, ml[0], toy_verify, NULL, &out, &ol), FED_EAUTH);
    free(sub);
    CHECK_OK(fed_sa_client_share(c[0], m[0], ml[0], toy_verify, NULL, &out, &ol));
    fed_free(out);
    for (uint32_t u = 0; u < 3; u++) fed_free(m[u]);
    for (uint32_t u = 0; u < 3; u++) fed_sa_client_destroy(&c[u]);
    fed_sa_server_destroy(&s);
    fed_sa_client_destroy(&c[0]); /* NULL-safe */
    fed_sa_server_destroy(NULL);
}

/* Every strict prefix and a one-byte extension of msg must be refused with FED_EFORMAT by
 * ingest (which must not change state: the genuine message is accepted afterwards). */
typedef fed_err (*ingest_fn)(void *obj, uint32_t id, const uint8_t *msg, size_t len);

static void check_malformed(ingest_fn ingest, void *obj, uint32_t id, const uint8_t *msg,
                            size_t len, const char *what) {
    uint8_t *b = malloc(len + 1);
    memcpy(b, msg, len);
    b[len] = 0;
    size_t wrong = 0, tried = 0;
    size_t stride = len > 2000 ? 997 : 1;
    for (size_t l = 0; l < len; l += (l < 64 ? 1 : stride)) {
        tried++;
        fed_err err = ingest(obj, id, b, l);
        if (err != FED_EFORMAT) {
            wrong++;
            if (wrong < 3)
                fprintf(stderr, "  %s prefix %zu: %s (%s)\n", what, l, fed_errname(err),
                        fed_errdetail(err));
        }
    }
    CHECK_SIZE(wrong, 0);
    CHECK(tried > 10);
    CHECK_ERR(ingest(obj, id, b, len + 1), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "trailing");
    CHECK_ERR(ingest(obj, id, NULL, 0), FED_EFORMAT);
    /* A wrong version and a nonzero reserved byte. */
    b[1] = 2;
    CHECK_ERR(ingest(obj, id, b, len), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "version");
    b[1] = msg[1];
    b[0] ^= 0x40;
    CHECK_ERR(ingest(obj, id, b, len), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "type");
    b[0] = msg[0];
    b[8] ^= 1;
    CHECK_ERR(ingest(obj, id, b, len), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "round");
    free(b);
}

static fed_err srv_keys(void *o, uint32_t id, const uint8_t *m, size_t l) {
    return fed_sa_server_add_keys(o, id, m, l, NULL, NULL);
}
static fed_err srv_shares(void *o, uint32_t id, const uint8_t *m, size_t l) {
    return fed_sa_server_add_shares(o, id, m, l);
}
static fed_err srv_masked(void *o, uint32_t id, const uint8_t *m, size_t l) {
    return fed_sa_server_add_masked(o, id, m, l);
}
static fed_err srv_unmask(void *o, uint32_t id, const uint8_t *m, size_t l) {
    return fed_sa_server_add_unmask(o, id, m, l);
}
static fed_err cl_share(void *o, uint32_t id, const uint8_t *m, size_t l) {
    uint8_t *out = NULL;
    size_t ol = 0;
    (void)id;
    fed_err err = fed_sa_client_share(o, m, l, NULL, NULL, &out, &ol);
    fed_free(out);
    return err;
}
static float zeros[64];
static fed_err cl_mask(void *o, uint32_t id, const uint8_t *m, size_t l) {
    uint8_t *out = NULL;
    size_t ol = 0;
    (void)id;
    fed_err err = fed_sa_client_mask(o, m, l, zeros, 50, NULL, &out, &ol);
    fed_free(out);
    return err;
}
static fed_err cl_unmask(void *o, uint32_t id, const uint8_t *m, size_t l) {
    uint8_t *out = NULL;
    size_t ol = 0;
    (void)id;
    fed_err err = fed_sa_client_unmask(o, m, l, &out, &ol);
    fed_free(out);
    return err;
}

TEST(malformed_messages_are_rejected_naming_the_field) {
    fed_sa_params p;
    params_for(&p, 4, 3, 50, 12);
    fed_sa_server *s = NULL;
    fed_sa_client *c[4];
    uint8_t *adv[4], *nbm[4], *sh[4], *del[4], *mk[4], *rq[4], *rp[4];
    size_t al[4], nl[4], sl[4], dl[4], ml[4], ql[4], pl[4];
    CHECK_OK(fed_sa_server_new(&s, &p));
    for (uint32_t u = 0; u < 4; u++) {
        CHECK_OK(fed_sa_client_new(&c[u], &p, u));
        CHECK_OK(fed_sa_client_advertise(c[u], (const uint8_t *)"sig", 3, &adv[u], &al[u]));
    }
    check_malformed(srv_keys, s, 0, adv[0], al[0], "ADVERTISE");
    for (uint32_t u = 0; u < 4; u++)
        CHECK_OK(fed_sa_server_add_keys(s, u, adv[u], al[u], NULL, NULL));
    for (uint32_t u = 0; u < 4; u++) CHECK_OK(fed_sa_server_keys_for(s, u, &nbm[u], &nl[u]));
    CHECK_ERR(fed_sa_server_add_keys(s, 0, adv[0], al[0], NULL, NULL), FED_EPROTO); /* late */
    check_malformed(cl_share, c[0], 0, nbm[0], nl[0], "NEIGHBOURS");
    /* A count beyond the degree. */
    nbm[0][FED_SA_HEADER_LEN] = 9;
    CHECK_ERR(cl_share(c[0], 0, nbm[0], nl[0]), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "NEIGHBOURS.count");
    nbm[0][FED_SA_HEADER_LEN] = 3;
    for (uint32_t u = 0; u < 4; u++)
        CHECK_OK(fed_sa_client_share(c[u], nbm[u], nl[u], NULL, NULL, &sh[u], &sl[u]));
    check_malformed(srv_shares, s, 1, sh[1], sl[1], "SHARES");
    CHECK_ERR(fed_sa_server_add_shares(s, 0, sh[1], sl[1]), FED_EPROTO); /* from 1, as 0 */
    for (uint32_t u = 0; u < 4; u++) CHECK_OK(fed_sa_server_add_shares(s, u, sh[u], sl[u]));
    for (uint32_t u = 0; u < 4; u++) CHECK_OK(fed_sa_server_shares_for(s, u, &del[u], &dl[u]));
    check_malformed(cl_mask, c[2], 2, del[2], dl[2], "DELIVERY");
    float x[50] = {0};
    CHECK_ERR(fed_sa_client_mask(c[0], del[0], dl[0], x, 49, NULL, &mk[0], &ml[0]), FED_ESHAPE);
    x[3] = NAN;
    CHECK_ERR(fed_sa_client_mask(c[0], del[0], dl[0], x, 50, NULL, &mk[0], &ml[0]), FED_ENONFINITE);
    x[3] = 0;
    for (uint32_t u = 0; u < 4; u++)
        CHECK_OK(fed_sa_client_mask(c[u], del[u], dl[u], x, 50, NULL, &mk[u], &ml[u]));
    check_malformed(srv_masked, s, 3, mk[3], ml[3], "MASKED");
    mk[3][FED_SA_HEADER_LEN] ^= 1; /* len */
    CHECK_ERR(fed_sa_server_add_masked(s, 3, mk[3], ml[3]), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "MASKED.len");
    mk[3][FED_SA_HEADER_LEN] ^= 1;
    for (uint32_t u = 0; u < 4; u++) CHECK_OK(fed_sa_server_add_masked(s, u, mk[u], ml[u]));
    for (uint32_t u = 0; u < 4; u++) CHECK_OK(fed_sa_server_unmask_for(s, u, &rq[u], &ql[u]));
    check_malformed(cl_unmask, c[1], 1, rq[1], ql[1], "UNMASK_REQUEST");
    for (uint32_t u = 0; u < 4; u++)
        CHECK_OK(fed_sa_client_unmask(c[u], rq[u], ql[u], &rp[u], &pl[u]));
    check_malformed(srv_unmask, s, 2, rp[2], pl[2], "UNMASK_REPLY");
    /* A share whose y is not a field element; a share claimed by another holder. */
    size_t share0 = FED_SA_HEADER_LEN + 4 + 8;
    rp[2][share0 + 4 + 7] = 0xff;
    CHECK_ERR(fed_sa_server_add_unmask(s, 2, rp[2], pl[2]), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "UNMASK_REPLY.entries[0].share");
    rp[2][share0 + 4 + 7] = rp[3][share0 + 4 + 7];
    memcpy(rp[2] + share0, rp[3] + share0, FED_SA_SHARE_BYTES);
    CHECK_ERR(fed_sa_server_add_unmask(s, 2, rp[2], pl[2]), FED_EPROTO);
    /* The answers of clients 0, 1, 3 are enough (t = 3 of 4). */
    for (uint32_t u = 0; u < 4; u++)
        if (u != 2) CHECK_OK(fed_sa_server_add_unmask(s, u, rp[u], pl[u]));
    float sum[50];
    uint32_t fixed[50];
    size_t survivors = 0;
    CHECK_ERR(fed_sa_server_finalize(s, sum, fixed, 49, &survivors), FED_ESHAPE);
    CHECK_OK(fed_sa_server_finalize(s, sum, fixed, 50, &survivors));
    CHECK_SIZE(survivors, 4);
    CHECK_ERR(fed_sa_server_finalize(s, sum, fixed, 50, &survivors), FED_EPROTO);
    for (uint32_t u = 0; u < 4; u++) {
        fed_free(adv[u]);
        fed_free(nbm[u]);
        fed_free(sh[u]);
        fed_free(del[u]);
        fed_free(mk[u]);
        fed_free(rq[u]);
        fed_free(rp[u]);
        fed_sa_client_destroy(&c[u]);
    }
    fed_sa_server_destroy(&s);
}

TEST(steps_out_of_order_are_refused) {
    fed_sa_params p;
    params_for(&p, 3, 2, 10, 1);
    fed_sa_client *c = NULL;
    fed_sa_server *s = NULL;
    uint8_t *m = NULL;
    size_t ml = 0;
    float x[10] = {0};
    CHECK_OK(fed_sa_client_new(&c, &p, 1));
    CHECK_OK(fed_sa_server_new(&s, &p));
    CHECK_ERR(fed_sa_client_share(c, NULL, 0, NULL, NULL, &m, &ml), FED_EPROTO);
    CHECK_ERR(fed_sa_client_mask(c, NULL, 0, x, 10, NULL, &m, &ml), FED_EPROTO);
    CHECK_ERR(fed_sa_client_unmask(c, NULL, 0, &m, &ml), FED_EPROTO);
    CHECK_CONTAINS(fed_errmsg(), "ADVERTISE");
    CHECK_ERR(fed_sa_client_advertise(c, NULL, 5, &m, &ml), FED_EINVAL);
    static const uint8_t big[FED_SA_SIG_MAX + 1] = {0};
    CHECK_ERR(fed_sa_client_advertise(c, big, sizeof big, &m, &ml), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "sig_len");
    CHECK_ERR(fed_sa_server_add_shares(s, 0, NULL, 0), FED_EPROTO);
    CHECK_ERR(fed_sa_server_add_masked(s, 0, NULL, 0), FED_EPROTO);
    CHECK_ERR(fed_sa_server_add_unmask(s, 0, NULL, 0), FED_EPROTO);
    CHECK_ERR(fed_sa_server_shares_for(s, 0, &m, &ml), FED_EPROTO);
    float sum[10];
    size_t survivors = 0;
    CHECK_ERR(fed_sa_server_finalize(s, sum, NULL, 10, &survivors), FED_EPROTO);
    CHECK(fed_sa_server_active(s, 0));
    /* Nobody advertised: ending phase 1 aborts, and the round stays aborted. */
    CHECK_ERR(fed_sa_server_keys_for(s, 0, &m, &ml), FED_EAGAIN);
    CHECK(!fed_sa_server_active(s, 0));
    CHECK_ERR(fed_sa_server_keys_for(s, 0, &m, &ml), FED_EAGAIN);
    CHECK_ERR(fed_sa_server_finalize(s, sum, NULL, 10, &survivors), FED_EAGAIN);
    CHECK(m == NULL);
    fed_sa_client_destroy(&c);
    fed_sa_server_destroy(&s);
    /* Masked inputs but no answers: finalize ends phase 3 and aborts. */
    stepper st;
    step_to_delivery(&st, 3, 2);
    CHECK_ERR(fed_sa_client_mask(st.c[0], st.msg[0], st.len[0], x, 10, NULL, &m, &ml), FED_ESHAPE);
    float y[50] = {0};
    for (uint32_t u = 0; u < 3; u++) {
        CHECK_OK(fed_sa_client_mask(st.c[u], st.msg[u], st.len[u], y, 50, NULL, &m, &ml));
        CHECK_OK(fed_sa_server_add_masked(st.s, u, m, ml));
        CHECK_ERR(fed_sa_server_add_masked(st.s, u, m, ml), FED_EPROTO);
        fed_free(m);
    }
    float sum50[50];
    CHECK_ERR(fed_sa_server_finalize(st.s, sum50, NULL, 50, &survivors), FED_EAGAIN);
    step_destroy(&st);
}

/* ---- What the server sees -------------------------------------------------------------- */

/* Pearson's chi-square of byte values against uniform (255 degrees of freedom: mean 255,
 * standard deviation 22.6). */
static double byte_chi_square(const uint8_t *p, size_t n) {
    double count[256] = {0}, expected = (double)n / 256, chi = 0;
    for (size_t i = 0; i < n; i++) count[p[i]]++;
    for (int b = 0; b < 256; b++) chi += (count[b] - expected) * (count[b] - expected) / expected;
    return chi;
}

TEST(a_masked_input_looks_uniform) {
    const size_t len = 1 << 16;
    fed_sa_params p;
    params_for(&p, 3, 2, len, 88);
    float *x = malloc(len * sizeof *x);
    for (size_t i = 0; i < len; i++) x[i] = (float)sin((double)i) * 0.01f; /* a small delta */
    fed_sa_server *s = NULL;
    fed_sa_client *c[3];
    uint8_t *m = NULL, *msg[3];
    size_t ml = 0, len_of[3];
    CHECK_OK(fed_sa_server_new(&s, &p));
    for (uint32_t u = 0; u < 3; u++) {
        CHECK_OK(fed_sa_client_new(&c[u], &p, u));
        CHECK_OK(fed_sa_client_advertise(c[u], NULL, 0, &m, &ml));
        CHECK_OK(fed_sa_server_add_keys(s, u, m, ml, NULL, NULL));
        fed_free(m);
    }
    for (uint32_t u = 0; u < 3; u++) CHECK_OK(fed_sa_server_keys_for(s, u, &msg[u], &len_of[u]));
    for (uint32_t u = 0; u < 3; u++) {
        CHECK_OK(fed_sa_client_share(c[u], msg[u], len_of[u], NULL, NULL, &m, &ml));
        CHECK_OK(fed_sa_server_add_shares(s, u, m, ml));
        fed_free(m);
        fed_free(msg[u]);
    }
    CHECK_OK(fed_sa_server_shares_for(s, 0, &msg[0], &len_of[0]));
    uint8_t key[32];
    rounding_key(key, 0);
    CHECK_OK(fed_sa_client_mask(c[0], msg[0], len_of[0], x, len, key, &m, &ml));
    CHECK_SIZE(ml, FED_SA_HEADER_LEN + 4 + 4 * len);
    double masked = byte_chi_square(m + FED_SA_HEADER_LEN + 4, 4 * len);
    uint32_t *q = malloc(len * sizeof *q);
    CHECK_OK(fed_sa_quantize(q, x, len, p.clip_range, p.quant_range, key));
    double plain = byte_chi_square((const uint8_t *)q, 4 * len);
    CHECK(masked < 400); /* 6.4 standard deviations above the mean */
    CHECK(plain > 400);
    fprintf(stderr, "  chi-square: masked %.1f, quantized only %.3g\n", masked, plain);
    /* Its words differ from the plain integers almost everywhere. */
    size_t same = 0;
    for (size_t i = 0; i < len; i++) {
        const uint8_t *w = m + FED_SA_HEADER_LEN + 4 + 4 * i;
        same += ((uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 |
                 (uint32_t)w[3] << 24) == q[i];
    }
    CHECK(same < 3);
    fed_free(m);
    fed_free(msg[0]);
    free(q);
    free(x);
    for (uint32_t u = 0; u < 3; u++) fed_sa_client_destroy(&c[u]);
    fed_sa_server_destroy(&s);
}

/* ---- Allocation failures ------------------------------------------------------------ */

TEST(allocation_failures_fail_cleanly) {
    fed_sa_params p;
    params_for(&p, 4, 3, 40, 3);
    float *x = random_inputs(4, p.len, 1.0f);
    uint8_t sends[4] = {4, 4, 4, 2};
    float sum[40];
    uint32_t fixed[40];
    uint8_t masked[4];
    size_t survivors = 0, nomem = 0;
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, run_round(&p, sends, x, sum, fixed, &survivors, masked));
        nomem += f.failed;
    }
    CHECK(nomem > 50);
    CHECK_SIZE(survivors, 3);
    uint32_t plain[40];
    plain_sum(plain, &p, x, masked);
    CHECK_MEM(fixed, plain, sizeof plain);
    fprintf(stderr, "  %zu allocation failures, each reported as FED_ENOMEM\n", nomem);
    free(x);
}

int main(void) {
    RUN(params_are_validated);
    RUN(graph_is_symmetric_regular_and_seeded);
    RUN(sums_are_exact_without_dropouts);
    RUN(every_dropout_pattern_after_sharing_small_n);
    RUN(random_dropouts_larger_n);
    RUN(dropouts_during_unmasking);
    RUN(dropouts_in_early_phases);
    RUN(tampered_replayed_and_readdressed_envelopes_are_rejected);
    RUN(a_client_never_reveals_both_secrets_of_a_neighbour);
    RUN(substituted_keys_and_signatures_are_rejected);
    RUN(malformed_messages_are_rejected_naming_the_field);
    RUN(steps_out_of_order_are_refused);
    RUN(a_masked_input_looks_uniform);
    RUN(allocation_failures_fail_cleanly);
    return test_report();
}
