/* The coordinator's update pipeline (coordinator/pipeline.h): the chain (order,
 * pass-through, errors, names, destruction) and each stage on its own, with real
 * aggregators, strategies, models and accountants: "mean", "secagg-mean", "dp",
 * "strategy". */
#include "coordinator/internal.h"
#include "test.h"

/* ---- a scripted stage: records its calls -------------------------------------------- */

typedef struct rec_stage {
    fed_stage base;
    char tag;
    fed_err ret;
    int *destroyed;
} rec_stage;

static char trail[16]; /* the tags of the close() calls, in order */

static fed_err rec_close(fed_stage *s, fed_round_agg *r) {
    rec_stage *t = (rec_stage *)s;
    size_t n = strlen(trail);
    trail[n] = t->tag;
    trail[n + 1] = '\0';
    r->mean[0] += 1.0f;
    return t->ret;
}

static void rec_destroy(fed_stage *s) {
    (*((rec_stage *)s)->destroyed)++;
}

static const fed_stage_type rec_type = {.name = "rec", .close = rec_close, .destroy = rec_destroy};
static const fed_stage_type pass_type = {.name = "pass", .close = NULL, .destroy = NULL};

static fed_stage *rec(char tag, fed_err ret, int *destroyed) {
    rec_stage *t = fed_calloc(1, sizeof *t);
    t->base.type = &rec_type;
    t->tag = tag;
    t->ret = ret;
    t->destroyed = destroyed;
    return &t->base;
}

TEST(chain_order_pass_through_errors) {
    int destroyed = 0;
    fed_stage *chain = NULL;
    fed_stage_append(&chain, rec('a', FED_OK, &destroyed));
    fed_stage *pass = fed_calloc(1, sizeof *pass);
    pass->type = &pass_type;
    fed_stage_append(&chain, pass);
    fed_stage_append(&chain, rec('b', FED_OK, &destroyed));
    char d[64];
    fed_stage_describe(chain, d, sizeof d);
    CHECK_STR(d, "rec -> pass -> rec");
    fed_stage_describe(chain, d, 8); /* cut, still a string */
    CHECK_STR(d, "rec -> ");
    float v = 0;
    fed_round_agg r = {.mean = &v, .n = 1};
    trail[0] = '\0';
    CHECK_OK(fed_stage_close_round(chain, &r));
    CHECK_STR(trail, "ab"); /* in order; the pass-through stage has no close() */
    CHECK_NEAR(v, 2.0, 0);
    fed_stage_destroy_all(&chain);
    CHECK(chain == NULL);
    CHECK_INT(destroyed, 2);
    fed_stage_destroy_all(&chain); /* NULL-safe */

    /* An error stops the chain. */
    destroyed = 0;
    fed_stage_append(&chain, rec('x', FED_ERANGE, &destroyed));
    fed_stage_append(&chain, rec('y', FED_OK, &destroyed));
    trail[0] = '\0';
    CHECK_ERR(fed_stage_close_round(chain, &r), FED_ERANGE);
    CHECK_STR(trail, "x");
    fed_stage_destroy_all(&chain);
    CHECK_INT(destroyed, 2);
}

/* ---- mean ---------------------------------------------------------------------------- */

static void commit(fed_agg *a, double w, const float *d, size_t n) {
    fed_agg_slot s;
    CHECK_OK(fed_agg_slot_open(a, &s, w));
    CHECK_OK(fed_agg_slot_write(a, s, 0, d, n));
    CHECK_OK(fed_agg_slot_commit(a, s, 0));
}

TEST(mean_stage) {
    fed_agg *a = NULL;
    CHECK_OK(fed_agg_new(&a, 3, 1));
    if (!a) return;
    fed_agg_set_clip(a, 5.0);
    const float d1[3] = {1, 2, 3}, d2[3] = {5, 6, 7}, big[3] = {30, 40, 0}; /* norm 50 */
    commit(a, 1, d1, 3);
    commit(a, 3, d2, 3);
    fed_stage *chain = NULL;
    CHECK_OK(fed_stage_mean_new(&chain, a));
    fed_round_agg r = {.n = 3};
    CHECK_OK(fed_stage_close_round(chain, &r));
    CHECK_SIZE(r.accepted, 2);
    CHECK_NEAR(r.weight, 4, 0);
    CHECK_SIZE(r.clipped, 1); /* norms 3.74 and 10.5: only the second is above 5 */
    /* (1 x d1 + 3 x d2 x 5/|d2|) / 4, |d2| = sqrt(110) */
    double s2 = 5.0 / sqrt(110.0);
    for (int i = 0; i < 3; i++)
        CHECK_NEAR(r.mean[i], ((double)d1[i] + 3 * (double)d2[i] * s2) / 4, 1e-6);
    /* A new round: one update, clipped from norm 50 to 5. */
    fed_agg_begin_round(a);
    commit(a, 2, big, 3);
    CHECK_OK(fed_stage_close_round(chain, &r));
    CHECK_SIZE(r.accepted, 1);
    CHECK_SIZE(r.clipped, 1);
    CHECK_NEAR(r.mean[0], 3, 1e-6);
    CHECK_NEAR(r.mean[1], 4, 1e-6);
    /* No update: the aggregator's own error. */
    fed_agg_begin_round(a);
    CHECK_ERR(fed_stage_close_round(chain, &r), FED_EINVAL);
    fed_stage_destroy_all(&chain);
    fed_agg_destroy(&a);
}

/* ---- secagg-mean --------------------------------------------------------------------- */

TEST(secagg_stage) {
    struct coord_sec sec;
    memset(&sec, 0, sizeof sec);
    float sum[4] = {2, 4, -6, 8};
    sec.sum = sum;
    sec.survivors = 2;
    sec.params.n = 8;
    fed_stage *chain = NULL;
    CHECK_OK(fed_stage_secagg_new(&chain, &sec));
    fed_round_agg r = {.n = 4, .z = 1.2, .clipped = 7};
    CHECK_OK(fed_stage_close_round(chain, &r));
    CHECK(r.mean == sum);
    const float want[4] = {1, 2, -3, 4};
    CHECK_MEM(sum, want, sizeof want);
    CHECK_SIZE(r.accepted, 2);
    CHECK_NEAR(r.weight, 2, 0);
    CHECK_SIZE(r.clipped, 0);
    CHECK_NEAR(r.z, 1.2 * 0.5, 1e-15); /* sqrt(2 / 8) */
    fed_stage_destroy_all(&chain);
}

/* ---- dp ------------------------------------------------------------------------------ */

#define NDP 200000

static fed_err dp_round(const fed_coord_dp_config *cfg, bool sites_add_noise,
                        fed_dp_accountant *acc, double *clip, fed_agg *agg, float *mean,
                        fed_round_agg *r) {
    fed_stage *chain = NULL;
    fed_err err = fed_stage_dp_new(&chain, cfg, sites_add_noise, acc, clip, agg);
    for (size_t i = 0; i < NDP; i++) mean[i] = 0.25f;
    r->mean = mean;
    if (!err) err = fed_stage_close_round(chain, r);
    fed_stage_destroy_all(&chain);
    return err;
}

TEST(dp_stage) {
    float *m1 = fed_mallocarray(NDP, sizeof(float)), *m2 = fed_mallocarray(NDP, sizeof(float));
    fed_dp_accountant *acc = NULL, *ref = NULL, *acc2 = NULL;
    fed_agg *agg = NULL;
    CHECK_OK(fed_dp_accountant_new(&acc));
    CHECK_OK(fed_dp_accountant_new(&ref));
    CHECK_OK(fed_dp_accountant_new(&acc2));
    CHECK_OK(fed_agg_new(&agg, 4, 1));
    if (!m1 || !m2 || !acc || !ref || !acc2 || !agg) goto done;
    fed_coord_dp_config cfg = {.noise = 1.1, .delta = 1e-5, .clip_lr = 0.2, .noise_seed = 9};
    double clip = 0.5;
    fed_round_agg r = {.round = 3,
                       .n = NDP,
                       .accepted = 10,
                       .sampled = 10,
                       .population = 100,
                       .z = 1.1,
                       .epsilon = (double)NAN};
    CHECK_OK(dp_round(&cfg, false, acc, &clip, agg, m1, &r));
    /* Noise of std z clip / m = 1.1 x 0.5 / 10 around the mean. */
    double s = 0, ss = 0;
    for (size_t i = 0; i < NDP; i++) s += (double)m1[i], ss += (double)m1[i] * (double)m1[i];
    double mu = s / NDP, sd = sqrt(ss / NDP - mu * mu);
    CHECK_NEAR(mu, 0.25, 0.001);
    CHECK_NEAR(sd, 0.055, 0.055 * 0.01);
    CHECK_NEAR(r.clip, 0.5, 0);
    CHECK_NEAR(clip, 0.5, 0); /* not adaptive: the bound stays */
    /* One accountant step of q = 10 / 100 and z 1.1: epsilon as an independent account. */
    double want = 0;
    CHECK_OK(fed_dp_accountant_step(ref, 0.1, 1.1, 1));
    CHECK_OK(fed_dp_accountant_epsilon(ref, 1e-5, FED_DP_IMPROVED, &want, NULL));
    CHECK_NEAR(r.epsilon, want, 0);
    CHECK(want > 0 && isfinite(want));
    CHECK_INT(fed_dp_accountant_steps(acc), 1);
    /* The same seed and round: the same noise. */
    fed_round_agg r2 = r;
    CHECK_OK(dp_round(&cfg, false, acc2, &clip, agg, m2, &r2));
    CHECK_MEM(m1, m2, NDP * sizeof(float));
    /* With secagg the sites added it: no noise here, the same accounting. */
    fed_dp_accountant_destroy(&acc2);
    CHECK_OK(fed_dp_accountant_new(&acc2));
    r2 = r;
    CHECK_OK(dp_round(&cfg, true, acc2, &clip, agg, m2, &r2));
    CHECK_NEAR(m2[0], 0.25, 0);
    CHECK_NEAR(m2[NDP - 1], 0.25, 0);
    CHECK_NEAR(r2.epsilon, want, 0);
    /* Adaptive clipping: 4 of 10 updates clipped, no noise on the update and the count's
     * tiny: the bound moves as fed_dp_adaptive_clip_update says for 6 / 10 unclipped. */
    cfg.noise = 0;
    cfg.target_quantile = 0.5;
    cfg.count_noise = 1e-9;
    r2 = r;
    r2.z = 0;
    r2.clipped = 4;
    double next = 0;
    CHECK_OK(fed_dp_adaptive_clip_update(0.5, 0.6, 0.5, 0.2, &next));
    CHECK_OK(dp_round(&cfg, false, acc2, &clip, agg, m2, &r2));
    CHECK_NEAR(clip, next, 1e-9);
    CHECK(clip < 0.5);           /* more than half unclipped: the bound shrinks */
    CHECK_NEAR(r2.clip, 0.5, 0); /* this round's bound, reported */
    /* z 0: clipping alone, nothing to account, epsilon infinite. */
    fed_coord_dp_config none = {.delta = 1e-5, .noise_seed = 9};
    r2 = r;
    r2.z = 0;
    CHECK_OK(dp_round(&none, false, acc2, &clip, agg, m2, &r2));
    CHECK(isinf(r2.epsilon));
    CHECK_NEAR(m2[7], 0.25, 0);
done:
    fed_free(m1);
    fed_free(m2);
    fed_dp_accountant_destroy(&acc);
    fed_dp_accountant_destroy(&ref);
    fed_dp_accountant_destroy(&acc2);
    fed_agg_destroy(&agg);
}

/* ---- strategy ------------------------------------------------------------------------ */

TEST(strategy_stage) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    fed_strategy *st = NULL;
    CHECK_OK(fed_arch_parse(&a, "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2},"
                                "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":1}]}"));
    CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (!m) return;
    fed_model_init(m, 3);
    CHECK_OK(fed_model_set_trainable_spec(m, "0", false, NULL)); /* layer 0 frozen: 6 of 9 floats */
    size_t np = fed_model_num_params(m), nt = fed_model_num_trainable(m);
    CHECK_SIZE(np, 9);
    CHECK_SIZE(nt, 3);
    float before[9], mean[3] = {0.5f, -1.0f, 2.0f};
    memcpy(before, fed_model_params(m), sizeof before);
    fed_strategy_config sc = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    sc.eta = 0.5f;
    CHECK_OK(fed_strategy_new(&st, &sc, nt));
    fed_stage *chain = NULL;
    CHECK_OK(fed_stage_strategy_new(&chain, m, st));
    fed_round_agg r = {.mean = mean, .n = 3};
    CHECK_OK(fed_stage_close_round(chain, &r));
    const float *w = fed_model_params(m);
    for (size_t i = 0; i < 6; i++) CHECK_NEAR(w[i], before[i], 0); /* frozen */
    for (size_t i = 0; i < 3; i++)
        CHECK_NEAR(w[6 + i], (double)(before[6 + i] + 0.5f * mean[i]), 1e-7);
    r.n = 2; /* an aggregate shorter than the trainable tensors */
    CHECK_ERR(fed_stage_close_round(chain, &r), FED_EINVAL);
    fed_stage_destroy_all(&chain);
    fed_strategy_destroy(&st);
    fed_model_destroy(&m);
}

/* The chains fed_coord_new builds from the configuration (FED_COORD_STAGES). */
static void chain_of(fed_coord_config *cfg, const char *want) {
    fed_coord *c = NULL;
    CHECK_OK(fed_coord_new(&c, cfg));
    if (!c) return;
    char d[128];
    fed_stage_describe(c->pipe, d, sizeof d);
    CHECK_STR(d, want);
    fed_coord_destroy(&c);
}

TEST(chains_from_the_configuration) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    CHECK_OK(fed_arch_parse(&a, "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2}]}"));
    CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (!m) return;
    fed_coord_config cfg = fed_coord_default_config();
    cfg.server.endpoint = "inproc://pipeline-chains";
    cfg.server.net.plaintext = true;
    cfg.model = m;
    cfg.input_stats = false;
    chain_of(&cfg, "mean -> strategy"); /* plain FedAvg: nothing else */
    cfg.dp.clip = 1.0;
    cfg.dp.noise = 1.0;
    chain_of(&cfg, "mean -> dp -> strategy");
    cfg.secagg.on = true;
    chain_of(&cfg, "secagg-mean -> dp -> strategy");
    cfg.dp.clip = cfg.dp.noise = 0;
    chain_of(&cfg, "secagg-mean -> strategy");
    fed_model_destroy(&m);
}

int main(void) {
    RUN(chain_order_pass_through_errors);
    RUN(mean_stage);
    RUN(secagg_stage);
    RUN(dp_stage);
    RUN(strategy_stage);
    RUN(chains_from_the_configuration);
    return test_report();
}
