/* The site's update pipeline (client/site_pipeline.h): the chain (the two moments a
 * stage runs at, order, pass-through, errors, names, destruction), the chain a
 * RoundStart builds, and each stage on its own with real values: "delta" against the
 * model's trainable ranges, "clip" to the exact scaled floats, "noise" against the
 * Gaussian stream of its key, "mask" through a whole secure-aggregation round in memory
 * (privacy/secagg.h) whose unmasked sum gives back the vector. */
#include "client/site_internal.h"
#include "client/site_pipeline.h"
#include "tests/test.h"

#include "core/alloc.h"
#include "core/arch.h"
#include "core/rng.h"
#include "privacy/dp.h"
#include "privacy/secagg_crypto.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- scripted stages: each appends its digit to v[0] -------------------------------- */

typedef struct digit_stage {
    site_stage base;
    int digit;   /* appended to v[0]: the value spells the order of the calls */
    fed_err ret; /* what apply() returns */
} digit_stage;

static int destroyed; /* destroy() calls */

static fed_err digit_apply(site_stage *s, site_update *u) {
    const digit_stage *d = (const digit_stage *)s;
    u->v[0] = u->v[0] * 10.0f + (float)d->digit;
    return d->ret;
}

static void digit_destroy(site_stage *s) {
    (void)s;
    destroyed++;
}

static const site_stage_type after_training = {"trained", SITE_STAGE_TRAINED, digit_apply,
                                               digit_destroy};
static const site_stage_type when_sent = {"sent", SITE_STAGE_SENT, digit_apply, digit_destroy};
static const site_stage_type pass_type = {"pass", SITE_STAGE_SENT, NULL, NULL};

static void add(site_stage **chain, const site_stage_type *type, int dig, fed_err ret) {
    digit_stage *d = fed_calloc(1, sizeof *d);
    *d = (digit_stage){.base.type = type, .digit = dig, .ret = ret};
    site_stage_append(chain, &d->base);
}

TEST(chain_order_moments_pass_through_errors) {
    site_stage *chain = NULL;
    add(&chain, &after_training, 1, FED_OK);
    add(&chain, &when_sent, 2, FED_OK);
    add(&chain, &pass_type, 9, FED_OK); /* no apply(): passed over */
    add(&chain, &when_sent, 3, FED_OK);
    float v = 0;
    site_update u = {.v = &v, .n = 1};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_TRAINED, &u));
    CHECK_NEAR(v, 1, 0); /* only the stage that runs after training */
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    CHECK_NEAR(v, 123, 0); /* then the others, in order */
    char d[64];
    site_stage_describe(chain, d, sizeof d);
    CHECK_STR(d, "trained -> sent -> pass -> sent");
    site_stage_describe(chain, d, 12); /* cut, still a string */
    CHECK_STR(d, "trained -> ");
    destroyed = 0;
    site_stage_destroy_all(&chain);
    CHECK(chain == NULL);
    CHECK_INT(destroyed, 3);        /* the pass-through stage has no destroy() */
    site_stage_destroy_all(&chain); /* NULL-safe */
    CHECK_OK(site_stage_run(NULL, SITE_STAGE_SENT, &u)); /* an empty chain: nothing */
    CHECK_NEAR(v, 123, 0);

    /* An error stops the chain. */
    add(&chain, &when_sent, 4, FED_ERANGE);
    add(&chain, &when_sent, 5, FED_OK);
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_SENT, &u), FED_ERANGE);
    CHECK_NEAR(v, 1234, 0);
    destroyed = 0;
    site_stage_destroy_all(&chain);
    CHECK_INT(destroyed, 2);
}

/* ---- the chain of a RoundStart -------------------------------------------------------- */

static void check_built_attack(const fed_msg_round_start *rs, const fed_site_attack *a,
                               const char *want) {
    site_secagg sa = {0};
    site_stage *chain = NULL;
    char d[128];
    CHECK_OK(site_pipe_build(&chain, rs, &sa, a, NULL, false));
    site_stage_describe(chain, d, sizeof d);
    CHECK_STR(d, want);
    /* "delta" and "attack" run after training, every other stage when the update is sent. */
    for (const site_stage *s = chain; s; s = s->next)
        CHECK_INT(s->type->when,
                  strcmp(s->type->name, "delta") == 0 || strcmp(s->type->name, "attack") == 0
                      ? SITE_STAGE_TRAINED
                      : SITE_STAGE_SENT);
    site_stage_destroy_all(&chain);
}

static void check_built(const fed_msg_round_start *rs, const char *want) {
    check_built_attack(rs, NULL, want);
}

TEST(chain_of_a_round_start) {
    fed_msg_round_start rs = {.round = 4};
    check_built(&rs, "delta"); /* a plain round pays for nothing else */
    rs.secagg.dp_clip = 1.0;   /* the sites' DP comes with secure aggregation only */
    rs.secagg.dp_noise_std = 0.5;
    check_built(&rs, "delta");
    rs.stats = true;
    check_built(&rs, ""); /* the statistics round: the moments are the update */
    rs.has_secagg = true;
    check_built(&rs, "clip -> noise -> mask");
    rs.stats = false;
    check_built(&rs, "delta -> clip -> noise -> mask");
    rs.secagg.dp_noise_std = 0;
    check_built(&rs, "delta -> clip -> mask");
    rs.secagg.dp_clip = 0;
    rs.secagg.dp_noise_std = 0.5;
    check_built(&rs, "delta -> noise -> mask");
    rs.secagg.dp_noise_std = 0;
    check_built(&rs, "delta -> mask");

    /* A simulated malicious site: its attack right after the delta, before any clipping;
     * label flipping is done to the data, not by a stage; none in the statistics round. */
    fed_site_attack flip = {.kind = FED_ATTACK_SIGN_FLIP};
    fed_site_attack labels = {.kind = FED_ATTACK_LABEL_FLIP};
    fed_site_attack honest = {.kind = FED_ATTACK_NONE};
    check_built_attack(&rs, &flip, "delta -> attack -> mask");
    check_built_attack(&rs, &labels, "delta -> mask");
    fed_site_attack backdoor = {.kind = FED_ATTACK_BACKDOOR, .param = 1};
    fed_site_attack lie = {.kind = FED_ATTACK_LIE, .param = 0.25};
    check_built_attack(&rs, &backdoor, "delta -> mask");
    check_built_attack(&rs, &lie, "delta -> attack -> mask");
    check_built_attack(&rs, &honest, "delta -> mask");
    rs.secagg.dp_clip = 1.0;
    check_built_attack(&rs, &flip, "delta -> attack -> clip -> mask");
    rs.has_secagg = false;
    rs.secagg.dp_clip = 0;
    check_built_attack(&rs, &flip, "delta -> attack");
    rs.stats = true;
    check_built_attack(&rs, &flip, "");
    rs.stats = false;
    rs.has_secagg = true;

    /* Out of memory at any of the four stages: an error and an empty chain. */
    rs.secagg.dp_clip = 1.0;
    rs.secagg.dp_noise_std = 0.5;
    site_secagg sa = {0};
    site_stage *chain = NULL;
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_err err = ALLOC_TRY(f, site_pipe_build(&chain, &rs, &sa, NULL, NULL, false));
        if (err == FED_OK) {
            site_stage_destroy_all(&chain); /* the last run: nothing failed */
            continue;
        }
        CHECK(chain == NULL);
    }
}

/* ---- delta --------------------------------------------------------------------------- */

/* 2 -> 2 -> 1, the first layer frozen: 6 of the 9 weights, 3 trainable (NULL: failed). */
static fed_model *half_frozen(void) {
    static const char spec[] = "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2},"
                               "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":1}]}";
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, spec) == FED_OK && fed_model_new(&m, a) == FED_OK) {
        fed_model_init(m, 3);
        if (fed_model_set_trainable_spec(m, "0", false, NULL) != FED_OK) fed_model_destroy(&m);
    }
    fed_arch_destroy(&a);
    return m;
}

TEST(delta_stage) {
    fed_model *m = half_frozen();
    CHECK(m != NULL);
    if (!m) return;
    CHECK_SIZE(fed_model_num_trainable(m), 3);
    float global[9], *w = fed_model_params(m);
    memcpy(global, w, sizeof global);
    for (size_t i = 0; i < 9; i++) w[i] += 0.25f * (float)(i + 1); /* "training" */
    site_stage *chain = NULL;
    CHECK_OK(site_stage_delta_new(&chain));
    float v[3] = {-7, -7, -7};
    site_update u = {.round = 2, .v = v, .n = 3, .model = m, .global = global};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u)); /* not its moment */
    CHECK_NEAR(v[0], -7, 0);
    CHECK_OK(site_stage_run(chain, SITE_STAGE_TRAINED, &u));
    for (size_t i = 0; i < 3; i++) CHECK_NEAR(v[i], (double)(w[6 + i] - global[6 + i]), 0);
    CHECK_NEAR(v[2], 2.25, 1e-6); /* only the trainable tensors, in order */
    w[7] = INFINITY;
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_TRAINED, &u), FED_ENONFINITE);
    CHECK_CONTAINS(fed_errmsg(), "the local update is not finite");
    site_stage_destroy_all(&chain);
    fed_model_destroy(&m);
}

/* ---- clip ---------------------------------------------------------------------------- */

static double norm(const float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * (double)v[i];
    return sqrt(s);
}

TEST(clip_stage) {
    site_stage *chain = NULL;
    CHECK_OK(site_stage_clip_new(&chain, 1.0));
    float v[3] = {3, 4, 0};
    site_update u = {.v = v, .n = 3};
    CHECK_NEAR(norm(v, 3), 5, 0);
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    /* scaled by 1/5, shrunk by 2^-22 so that float rounding stays within the bound */
    const double f = 1.0 / 5.0 * (1.0 - 0x1p-22);
    CHECK_NEAR(v[0], (double)(float)(3.0 * f), 0);
    CHECK_NEAR(v[1], (double)(float)(4.0 * f), 0);
    CHECK_NEAR(v[2], 0, 0);
    CHECK(norm(v, 3) <= 1.0);
    CHECK_NEAR(norm(v, 3), 1.0, 1e-6);
    /* Within the bound: not touched. */
    float in[2] = {0.3f, 0.4f}, copy[2] = {0.3f, 0.4f};
    u = (site_update){.v = in, .n = 2};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    CHECK_MEM(in, copy, sizeof in);
    in[1] = NAN;
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_SENT, &u), FED_ENONFINITE);
    site_stage_destroy_all(&chain);
}

/* ---- noise --------------------------------------------------------------------------- */

#define NN 4096

TEST(noise_stage) {
    uint8_t key[32];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(7 * i + 1);
    static float v[NN], want[NN], other[NN];
    for (size_t i = 0; i < NN; i++) v[i] = want[i] = (float)i / NN;
    site_stage *chain = NULL;
    CHECK_OK(site_stage_noise_new(&chain, 0.5, key));
    site_update u = {.round = 9, .v = v, .n = NN};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    CHECK_OK(fed_dp_add_gaussian(want, NN, 0.5, key, 9)); /* the round's stream of the key */
    CHECK_MEM(v, want, sizeof v);
    site_stage_destroy_all(&chain);

    /* Production: a fresh key for every update, noise of the std asked for. */
    CHECK_OK(site_stage_noise_new(&chain, 0.5, NULL));
    memset(v, 0, sizeof v);
    memset(other, 0, sizeof other);
    u = (site_update){.round = 9, .v = v, .n = NN};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    u.v = other;
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    CHECK(memcmp(v, other, sizeof v) != 0);
    CHECK_NEAR(norm(v, NN) / sqrt((double)NN), 0.5, 0.05); /* 0.5 +- 9 standard errors */
    CHECK_NEAR(norm(other, NN) / sqrt((double)NN), 0.5, 0.05);
    site_stage_destroy_all(&chain);
}

/* ---- mask ---------------------------------------------------------------------------- */

#define ML 6

/* Two participants of a round in memory, up to their DELIVERY messages. */
static void secagg_to_delivery(const fed_sa_params *p, fed_sa_server *srv, fed_sa_client *c[2],
                               uint8_t *delivery[2], size_t delivery_len[2]) {
    uint8_t *m = NULL, *r = NULL;
    size_t ml = 0, rl = 0;
    for (uint32_t u = 0; u < 2; u++) {
        CHECK_OK(fed_sa_client_new(&c[u], p, u));
        CHECK_OK(fed_sa_client_advertise(c[u], NULL, 0, &m, &ml));
        CHECK_OK(fed_sa_server_add_keys(srv, u, m, ml, NULL, NULL));
        fed_free(m);
    }
    for (uint32_t u = 0; u < 2; u++) {
        CHECK_OK(fed_sa_server_keys_for(srv, u, &m, &ml));
        CHECK_OK(fed_sa_client_share(c[u], m, ml, NULL, NULL, &r, &rl));
        CHECK_OK(fed_sa_server_add_shares(srv, u, r, rl));
        fed_free(m);
        fed_free(r);
    }
    for (uint32_t u = 0; u < 2; u++)
        CHECK_OK(fed_sa_server_shares_for(srv, u, &delivery[u], &delivery_len[u]));
}

/* ---- attack (a simulated malicious site) -------------------------------------------------- */

/* Runs a one-stage chain of attack a on v (n floats) for round `round`. */
static fed_err run_attack(const fed_site_attack *a, float *v, size_t n, uint64_t round) {
    site_stage *chain = NULL;
    fed_err err = site_stage_attack_new(&chain, a);
    if (err) return err;
    site_update u = {.round = round, .v = v, .n = n};
    err = site_stage_run(chain, SITE_STAGE_TRAINED, &u);
    site_stage_destroy_all(&chain);
    return err;
}

TEST(attack_stage) {
    enum { NA = 100000 };
    float *d = fed_mallocarray(NA, sizeof *d), *v = fed_mallocarray(NA, sizeof *v),
          *w = fed_mallocarray(NA, sizeof *w);
    CHECK(d && v && w);
    for (size_t i = 0; i < NA; i++) d[i] = (float)((double)i * 0.37 - 1234.5) * 0.01f;

    /* Sign flip: exactly -d. */
    fed_site_attack a = {.kind = FED_ATTACK_SIGN_FLIP};
    memcpy(v, d, NA * sizeof *v);
    CHECK_OK(run_attack(&a, v, NA, 3));
    size_t bad = 0;
    for (size_t i = 0; i < NA; i++) bad += v[i] != -d[i];
    CHECK_SIZE(bad, 0);

    /* Scale: exactly K d (K = 10, a sample of ten sites). */
    a = (fed_site_attack){.kind = FED_ATTACK_SCALE, .param = 10};
    memcpy(v, d, NA * sizeof *v);
    CHECK_OK(run_attack(&a, v, NA, 3));
    bad = 0;
    for (size_t i = 0; i < NA; i++) bad += v[i] != 10.0f * d[i];
    CHECK_SIZE(bad, 0);

    /* Noise of std S = 0.25 on a zero update: mean ~0 and std ~S over 10^5 coordinates;
     * the same seed and round give the same bytes, another round or seed others. */
    a = (fed_site_attack){.kind = FED_ATTACK_NOISE, .param = 0.25, .seed = 42};
    memset(v, 0, NA * sizeof *v);
    CHECK_OK(run_attack(&a, v, NA, 7));
    double sum = 0, sq = 0;
    for (size_t i = 0; i < NA; i++) {
        sum += (double)v[i];
        sq += (double)v[i] * (double)v[i];
    }
    double mean = sum / NA, sd = sqrt(sq / NA - mean * mean);
    CHECK_NEAR(mean, 0.0, 0.01 * 0.25);
    CHECK_NEAR(sd, 0.25, 0.01 * 0.25);
    memset(w, 0, NA * sizeof *w);
    CHECK_OK(run_attack(&a, w, NA, 7));
    CHECK_MEM(v, w, NA * sizeof *v);
    memset(w, 0, NA * sizeof *w);
    CHECK_OK(run_attack(&a, w, NA, 8));
    CHECK(memcmp(v, w, NA * sizeof *v) != 0);
    a.seed = 43;
    memset(w, 0, NA * sizeof *w);
    CHECK_OK(run_attack(&a, w, NA, 7));
    CHECK(memcmp(v, w, NA * sizeof *v) != 0);
    /* On a real delta the noise adds: d + the same draws (summed in double, rounded once). */
    a.seed = 42;
    memcpy(w, d, NA * sizeof *w);
    CHECK_OK(run_attack(&a, w, NA, 7));
    bad = 0;
    for (size_t i = 0; i < NA; i++)
        bad += fabs((double)w[i] - ((double)d[i] + (double)v[i])) > 1e-6 * (fabs((double)d[i]) + 1);
    CHECK_SIZE(bad, 0);

    /* Parameters out of range and kinds with no stage are refused, nothing appended. */
    site_stage *chain = NULL;
    a = (fed_site_attack){.kind = FED_ATTACK_SCALE, .param = 0};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "attack scale: K 0 must be finite and not 0");
    a = (fed_site_attack){.kind = FED_ATTACK_NOISE, .param = -1};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "attack noise: S -1 must be finite and > 0");
    a = (fed_site_attack){.kind = FED_ATTACK_NOISE, .param = NAN};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    a = (fed_site_attack){.kind = FED_ATTACK_LABEL_FLIP};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    a = (fed_site_attack){.kind = FED_ATTACK_NONE};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK(chain == NULL);
    a = (fed_site_attack){.kind = FED_ATTACK_SIGN_FLIP};
    FOR_EACH_ALLOC_FAILURE(f) {
        fed_err err = ALLOC_TRY(f, site_stage_attack_new(&chain, &a));
        if (err == FED_OK) {
            site_stage_destroy_all(&chain);
            continue;
        }
        CHECK_INT(err, FED_ENOMEM);
        CHECK(chain == NULL);
    }
    fed_free(d);
    fed_free(v);
    fed_free(w);
}

/* LIE's fake trainer: resample k's delta is row k of `rows` (K x 3 floats); from `fail_at`
 * on it fails. */
typedef struct lie_rows {
    const float *rows;
    size_t calls, fail_at;
} lie_rows;

static fed_err fake_retrain(void *user, size_t k, float *out) {
    lie_rows *l = user;
    l->calls++;
    if (k >= l->fail_at) return fed_errorf(FED_EIO, "resample %zu failed", k);
    memcpy(out, l->rows + 3 * k, 3 * sizeof *out);
    return FED_OK;
}

TEST(lie_z_and_stage) {
    /* Z by hand: n = 10 sampled, f = 2 malicious: s = floor(10/2 + 1) - 2 = 4, Z =
     * Phi^-1((10 - 4) / 10) = Phi^-1(0.6) = 0.2533471031357998; the paper's n = 50, f = 12:
     * s = 14, Phi^-1(0.72) = 0.5828415072712162. Undefined when f reaches floor(n/2 + 1). */
    const double z = fed_site_lie_z(10, 2);
    CHECK_NEAR(z, 0.2533471031357998, 1e-12);
    CHECK_NEAR(fed_site_lie_z(50, 12), 0.5828415072712162, 1e-12);
    CHECK_NEAR(fed_site_lie_z(10, 1), 0.0, 1e-12); /* s = 5: Phi^-1(0.5) */
    CHECK(isnan(fed_site_lie_z(10, 6)));
    CHECK(isnan(fed_site_lie_z(1, 1)));
    CHECK(isnan(fed_site_lie_z(0, 0)));

    /* K = 5 deltas of 3 coordinates: {1..5} (mu 3, sample var 2.5), {0,0,0,0,2} (mu 0.4,
     * var 0.8), all 7 (sigma 0). Out = mu - Z sigma: 2.599423057742643,
     * 0.17339946219428065, 7, computed in double and rounded once. */
    CHECK_SIZE(FED_SITE_LIE_K, 5);
    const float rows[15] = {1, 0, 7, 2, 0, 7, 3, 0, 7, 4, 0, 7, 5, 2, 7};
    lie_rows lr = {rows, 0, 99};
    fed_site_attack a = {.kind = FED_ATTACK_LIE, .param = z};
    site_stage *chain = NULL;
    CHECK_OK(site_stage_attack_new(&chain, &a));
    float v[3] = {-9, -9, -9};
    site_update u = {.round = 2, .v = v, .n = 3, .retrain = fake_retrain, .retrain_user = &lr};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_TRAINED, &u));
    CHECK_SIZE(lr.calls, 5);
    const float want[3] = {(float)(3.0 - z * sqrt(2.5)), (float)(0.4 - z * sqrt(0.8)), 7.0f};
    CHECK_MEM(v, want, sizeof want);
    CHECK_NEAR(v[0], 2.599423057742643, 1e-6);
    CHECK_NEAR(v[1], 0.17339946219428065, 1e-6);
    float direct[3];
    site_lie_combine(direct, rows, 5, 3, z);
    CHECK_MEM(direct, want, sizeof want);

    /* A failing training fails the stage with its error; no trainer is an internal error. */
    lr = (lie_rows){rows, 0, 3};
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_TRAINED, &u), FED_EIO);
    CHECK_STR(fed_errmsg(), "resample 3 failed");
    CHECK_SIZE(lr.calls, 4);
    u.retrain = NULL;
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_TRAINED, &u), FED_EINTERNAL);
    CHECK_STR(fed_errmsg(), "attack lie: no way to train again");
    site_stage_destroy_all(&chain);

    /* Z out of range is refused, nothing appended; the backdoor has no stage. */
    a.param = -1;
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "attack lie: Z -1 must be finite and >= 0");
    a.param = NAN;
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    a.param = INFINITY;
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK(chain == NULL);
    a = (fed_site_attack){.kind = FED_ATTACK_BACKDOOR};
    CHECK_ERR(site_stage_attack_new(&chain, &a), FED_EINVAL);
    CHECK(chain == NULL);
}

TEST(mask_stage_and_unmask_recover_the_vector) {
    fed_sa_params p;
    fed_sa_params_default(&p, 2, ML);
    p.degree = 1;
    p.threshold = 2;
    p.round = 5;
    fed_sa_server *srv = NULL;
    fed_sa_client *c[2] = {NULL, NULL};
    uint8_t *delivery[2] = {NULL, NULL}, k0[32], k1[32];
    size_t delivery_len[2] = {0, 0};
    CHECK_OK(fed_sa_server_new(&srv, &p));
    if (!srv) return;
    secagg_to_delivery(&p, srv, c, delivery, delivery_len);
    for (int i = 0; i < 32; i++) k0[i] = (uint8_t)i, k1[i] = (uint8_t)(100 + i);

    /* Site 0 through its pipeline: clip to norm 1, then mask (the chain's order). */
    float x0[ML] = {0.6f, -0.8f, 0, 0, 0, 0}, x1[ML] = {0.25f, 0.5f, -0.125f, 0.1f, 0, -0.3f};
    float v[ML];
    for (size_t i = 0; i < ML; i++) v[i] = 2.0f * x0[i]; /* norm 2, clipped to ~1 */
    site_secagg sa = {.client = c[0], .delivery = delivery[0], .delivery_len = delivery_len[0]};
    site_stage *chain = NULL;
    CHECK_OK(site_stage_clip_new(&chain, 1.0));
    CHECK_OK(site_stage_mask_new(&chain, &sa, k0));
    float clipped[ML];
    memcpy(clipped, v, sizeof v);
    CHECK_OK(fed_dp_clip(clipped, ML, 1.0, NULL, NULL));
    site_update u = {.round = p.round, .v = v, .n = ML};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
    CHECK(u.wire != NULL);
    CHECK(u.wire_len > 0 && u.wire[0] == FED_SA_MSG_MASKED);
    static const float zero[ML];
    CHECK_MEM(v, zero, sizeof v); /* only the masked form stays */

    /* Site 1 masks directly; the coordinator sums, unmasks, decodes. */
    uint8_t *m = NULL, *r = NULL;
    size_t ml = 0, rl = 0;
    CHECK_OK(fed_sa_client_mask(c[1], delivery[1], delivery_len[1], x1, ML, k1, &m, &ml));
    CHECK_OK(fed_sa_server_add_masked(srv, 0, u.wire, u.wire_len));
    CHECK_OK(fed_sa_server_add_masked(srv, 1, m, ml));
    fed_free(m);
    for (uint32_t k = 0; k < 2; k++) {
        CHECK_OK(fed_sa_server_unmask_for(srv, k, &m, &ml));
        CHECK_OK(fed_sa_client_unmask(c[k], m, ml, &r, &rl));
        CHECK_OK(fed_sa_server_add_unmask(srv, k, r, rl));
        fed_free(m);
        fed_free(r);
    }
    float sum[ML];
    uint32_t fixed[ML], q0[ML], q1[ML];
    size_t survivors = 0;
    CHECK_OK(fed_sa_server_finalize(srv, sum, fixed, ML, &survivors));
    CHECK_SIZE(survivors, 2);
    /* Exactly the sum of the two quantized inputs, site 0's clipped first. */
    CHECK_OK(fed_sa_quantize(q0, clipped, ML, p.clip_range, p.quant_range, k0));
    CHECK_OK(fed_sa_quantize(q1, x1, ML, p.clip_range, p.quant_range, k1));
    for (size_t i = 0; i < ML; i++) CHECK_INT((long long)fixed[i], (long long)(q0[i] + q1[i]));
    double step = 2.0 * p.clip_range / p.quant_range;
    for (size_t i = 0; i < ML; i++)
        CHECK_NEAR(sum[i], (double)clipped[i] + (double)x1[i], 2 * step + 1e-6);
    CHECK_NEAR(clipped[0], 0.6, 1e-6);

    /* Without the DELIVERY (or after the round): the protocol's error, v wiped all the
     * same. */
    fed_free(u.wire);
    u.wire = NULL;
    for (size_t i = 0; i < ML; i++) v[i] = x1[i];
    CHECK(site_stage_run(chain, SITE_STAGE_SENT, &u) != FED_OK);
    CHECK(u.wire == NULL);
    CHECK_MEM(v, zero, sizeof v);

    site_stage_destroy_all(&chain);
    for (int k = 0; k < 2; k++) {
        fed_sa_client_destroy(&c[k]);
        fed_free(delivery[k]);
    }
    fed_sa_server_destroy(&srv);
}

/* ---- compress ------------------------------------------------------------------------ */

/* The chain asks for "compress" only on a plain training round of a site with the
 * capability, for a codec it knows (an unknown name: the plain delta). */
TEST(compress_in_the_chain) {
    float *resid = NULL;
    size_t rn = 0;
    site_compress cz = {true, 7, &resid, &rn}, old = {false, 7, &resid, &rn};
    fed_msg_round_start rs = {.round = 2, .compress = "q8"};
    site_secagg sa = {0};
    const struct {
        const site_compress *cz;
        const char *compress;
        bool stats, secagg;
        const char *want;
    } cases[] = {
        {&cz, "q8", false, false, "delta -> compress"},
        {&cz, "topk:0.01+q8", false, false, "delta -> compress"},
        {&cz, "none", false, false, "delta"},
        {&cz, "", false, false, "delta"},
        {&cz, "zstd", false, false, "delta"}, /* a newer coordinator's codec */
        {&old, "q8", false, false, "delta"},
        {NULL, "q8", false, false, "delta"},
        {&cz, "q8", true, false, ""},
        {&cz, "q8", false, true, "delta -> mask"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        site_stage *chain = NULL;
        char d[128];
        rs.compress = cases[i].compress;
        rs.stats = cases[i].stats;
        rs.has_secagg = cases[i].secagg;
        CHECK_OK(site_pipe_build(&chain, &rs, &sa, NULL, cases[i].cz, false));
        site_stage_describe(chain, d, sizeof d);
        CHECK_STR(d, cases[i].want);
        site_stage_destroy_all(&chain);
    }
}

/* Error feedback: over rounds, what was sent plus the residual is the sum of the deltas
 * (top-k 10% of 200 floats: 20 a round; the residual carries the other 180). The stream
 * is the codec's (it decodes to what the stage subtracted), and a vector of another size
 * starts the residual afresh. */
TEST(compress_error_feedback) {
    enum { N = 200, ROUNDS = 3 };
    float *resid = NULL;
    size_t rn = 0;
    site_compress cz = {true, 11, &resid, &rn};
    fed_codec codec;
    CHECK_OK(fed_codec_parse(&codec, "topk:0.1"));
    site_stage *chain = NULL;
    CHECK_OK(site_stage_compress_new(&chain, &codec, &cz));
    static double sum_delta[N], sum_sent[N];
    static float v[N], sent[N];
    fed_rng r;
    fed_rng_seed(&r, 5);
    for (uint64_t round = 1; round <= ROUNDS; round++) {
        for (size_t i = 0; i < N; i++) {
            v[i] = fed_rng_normal(&r);
            sum_delta[i] += (double)v[i];
        }
        site_update u = {.round = round, .v = v, .n = N};
        CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &u));
        CHECK(u.wire != NULL);
        CHECK_SIZE(u.wire_len, 24 + 20 * 4 + 20 * 4);
        CHECK_INT(u.wire_enc, FED_ENCODING_DELTA_TOPK);
        CHECK_OK(fed_codec_decode(u.wire, u.wire_len, sent, N, NULL));
        int kept = 0;
        for (size_t i = 0; i < N; i++) {
            sum_sent[i] += (double)sent[i];
            kept += sent[i] != 0;
        }
        CHECK_INT(kept, 20);
        fed_free(u.wire);
        CHECK_SIZE(rn, N);
        double worst = 0;
        for (size_t i = 0; i < N; i++)
            worst = fmax(worst, fabs(sum_sent[i] + (double)resid[i] - sum_delta[i]));
        CHECK(worst < 1e-5);
    }
    /* The residual is not all zero: top-k left most of it for later. */
    int carried = 0;
    for (size_t i = 0; i < N; i++) carried += resid[i] != 0;
    CHECK(carried > 150);
    site_update small = {.round = 9, .v = v, .n = 50};
    CHECK_OK(site_stage_run(chain, SITE_STAGE_SENT, &small));
    CHECK_SIZE(rn, 50);
    CHECK_SIZE(small.wire_len, 24 + 5 * 8);
    fed_free(small.wire);
    /* A value fp16 cannot hold fails the round with the codec's line. */
    site_stage_destroy_all(&chain);
    CHECK_OK(fed_codec_parse(&codec, "fp16"));
    CHECK_OK(site_stage_compress_new(&chain, &codec, &cz));
    v[3] = 1e6f;
    site_update big = {.round = 10, .v = v, .n = 50};
    CHECK_ERR(site_stage_run(chain, SITE_STAGE_SENT, &big), FED_ERANGE);
    CHECK(big.wire == NULL);
    CHECK(resid[3] == v[3]); /* nothing sent: the residual is all of it */
    site_stage_destroy_all(&chain);
    fed_free(resid);
}

/* The residual on disk: saved atomically, read back exactly; a missing file is none; a
 * malformed one (every truncation, magic, n, digest, a NaN) is one error naming the file. */
TEST(residual_file) {
    char dir[] = "/tmp/fedtune-resid-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(false);
        return;
    }
    float e[5] = {1.5f, -2, 0, 3e-7f, 1e20f}, *got = NULL;
    size_t n = 99;
    CHECK_OK(site_resid_load(dir, &got, &n)); /* none yet */
    CHECK(got == NULL);
    CHECK_SIZE(n, 0);
    CHECK_OK(site_resid_save(dir, e, 5));
    CHECK_OK(site_resid_load(dir, &got, &n));
    CHECK_SIZE(n, 5);
    if (got) CHECK_MEM(got, e, sizeof e);
    fed_free(got);
    e[0] = 7;
    CHECK_OK(site_resid_save(dir, e, 3)); /* replaced whole */
    CHECK_OK(site_resid_load(dir, &got, &n));
    CHECK_SIZE(n, 3);
    if (got) CHECK(got[0] == 7);
    fed_free(got);
    char path[128];
    snprintf(path, sizeof path, "%s/residual.bin", dir);
    uint8_t b[16 + 12 + 32], t[sizeof b];
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(b, 1, sizeof b, f) == sizeof b);
    if (f) fclose(f);
    int wrong = 0;
    for (size_t len = 0; len < sizeof b; len++) {
        wrong += site_resid_parse(b, len, "r.bin", &got, &n) != FED_EFORMAT;
        wrong += got != NULL;
    }
    CHECK_INT(wrong, 0);
    CHECK_ERR(site_resid_parse(b, 10, "r.bin", &got, &n), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "r.bin: 10 bytes, too short for a residual file");
    memcpy(t, b, sizeof b);
    t[0] = 'X';
    CHECK_ERR(site_resid_parse(t, sizeof t, "r.bin", &got, &n), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "r.bin: not a fedtune residual file (magic)");
    memcpy(t, b, sizeof b);
    t[8] = 4;
    CHECK_ERR(site_resid_parse(t, sizeof t, "r.bin", &got, &n), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "r.bin: n 4, but the file has 60 bytes");
    memcpy(t, b, sizeof b);
    t[15] = 0x80; /* n = 2^63 + 3: no overflow into a small length */
    CHECK_ERR(site_resid_parse(t, sizeof t, "r.bin", &got, &n), FED_EFORMAT);
    memcpy(t, b, sizeof b);
    t[20] ^= 1;
    CHECK_ERR(site_resid_parse(t, sizeof t, "r.bin", &got, &n), FED_EFORMAT);
    CHECK_STR(fed_errmsg(), "r.bin: digest mismatch (torn or corrupted)");
    float nan3[3] = {0, NAN, 0};
    CHECK_OK(site_resid_save(dir, nan3, 3));
    CHECK_ERR(site_resid_load(dir, &got, &n), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "residual.bin: value 1 is not finite");
    remove(path);
    rmdir(dir);
}

int main(void) {
    RUN(chain_order_moments_pass_through_errors);
    RUN(chain_of_a_round_start);
    RUN(delta_stage);
    RUN(clip_stage);
    RUN(noise_stage);
    RUN(attack_stage);
    RUN(lie_z_and_stage);
    RUN(mask_stage_and_unmask_recover_the_vector);
    RUN(compress_in_the_chain);
    RUN(compress_error_feedback);
    RUN(residual_file);
    return test_report();
}
