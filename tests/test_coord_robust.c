/* The robust rules (coordinator/stage_robust.c) behind a real aggregator, whose commits
 * reach the stage through the per-update hook, and the spill file under them
 * (coordinator/spill.h): exact medians and trimmed means, Krum choosing among the good,
 * the adaptive norm bound, the geometric median held near the good updates by a far
 * outlier, updates that span several blocks, and the refusals at start-up. */
#include "coordinator/internal.h"
#include "coordinator/spill.h"
#include "test.h"

#include <stdlib.h>

/* A chain "mean -> <rule>" over an aggregator of n floats, the hook installed. */
typedef struct rig {
    fed_agg *agg;
    fed_stage *chain;
    fed_round_agg r;
} rig;

static void rig_open(rig *g, size_t n, fed_robust_rule rule, size_t f, double trim) {
    memset(g, 0, sizeof *g);
    CHECK_OK(fed_agg_new(&g->agg, n, 1));
    CHECK_OK(fed_stage_mean_new(&g->chain, g->agg));
    fed_coord_robust_config rc = {.rule = rule, .byzantine = f, .trim = trim};
    CHECK_OK(fed_stage_robust_new(&g->chain, &rc, n, NULL));
    CHECK(fed_stage_wants_updates(g->chain));
    fed_agg_set_observer(g->agg, fed_stage_update_all, g->chain);
    g->r.n = n;
}

static void rig_add(rig *g, double w, const float *d) {
    fed_agg_slot s;
    CHECK_OK(fed_agg_slot_open(g->agg, &s, w));
    CHECK_OK(fed_agg_slot_write(g->agg, s, 0, d, fed_agg_size(g->agg)));
    CHECK_OK(fed_agg_slot_commit(g->agg, s, 0));
}

static void rig_close(rig *g) {
    g->r.mean = NULL;
    CHECK_OK(fed_stage_close_round(g->chain, &g->r));
}

static void rig_next_round(rig *g) {
    fed_agg_begin_round(g->agg);
    fed_stage_begin_all(g->chain);
}

static void rig_free(rig *g) {
    fed_stage_destroy_all(&g->chain);
    fed_agg_destroy(&g->agg);
}

/* ---- the spill file ------------------------------------------------------------------ */

TEST(spill_rows_and_blocks) {
    fed_spill *sp = NULL;
    CHECK_ERR(fed_spill_new(&sp, "/nonexistent/fedtune", 4), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "spill: cannot create a file in /nonexistent/fedtune");
    CHECK_ERR(fed_spill_new(&sp, NULL, 0), FED_EINVAL);
    const size_t n = 3000; /* not a page's floats: rows are padded to pages */
    CHECK_OK(fed_spill_new(&sp, NULL, n));
    if (!sp) return;
    float *row = malloc(n * sizeof *row), *out = malloc(20 * n * sizeof *out);
    for (size_t r = 0; r < 20; r++) { /* 20 rows: the file doubles from 8 to 16 to 32 */
        for (size_t j = 0; j < n; j++) row[j] = (float)(r * 10000 + j);
        CHECK_OK(fed_spill_add(sp, row, (double)r + 1, (double)r * 2));
    }
    CHECK_SIZE(fed_spill_rows(sp), 20);
    CHECK_NEAR(fed_spill_weight(sp, 7), 8, 0);
    CHECK_NEAR(fed_spill_norm(sp, 7), 14, 0);
    CHECK_SIZE(fed_spill_block(sp), 3072); /* n rounded up to 1024 floats */
    fed_spill_gather(sp, 1000, 1500, out); /* a block that straddles pages */
    int bad = 0;
    for (size_t r = 0; r < 20; r++)
        for (size_t j = 0; j < 1500; j++)
            if (out[r * 1500 + j] != (float)(r * 10000 + 1000 + j)) bad++;
    CHECK_INT(bad, 0);
    fed_spill_reset(sp); /* the next round writes over the rows */
    CHECK_SIZE(fed_spill_rows(sp), 0);
    for (size_t j = 0; j < n; j++) row[j] = -1.0f;
    CHECK_OK(fed_spill_add(sp, row, 1, 1));
    fed_spill_gather(sp, 2990, 10, out);
    CHECK_NEAR(out[9], -1, 0);
    free(row);
    free(out);
    fed_spill_destroy(&sp);
    CHECK(sp == NULL);
}

/* ---- median and trimmed mean --------------------------------------------------------- */

TEST(median_exact_over_blocks) {
    /* 5 updates of 1 M + 37 floats: with 5 rows a block is 838 656 floats, so two blocks
     * and a tail that is not a page. Three good updates i = 0, 1, 2 hold (i + 1) + j x 1e-6
     * at j; two attackers hold 1e6 and -3 e5. The median is the middle good update. */
    const size_t n = (1u << 20) + 37;
    rig g;
    rig_open(&g, n, FED_ROBUST_MEDIAN, 2, 0);
    float *d = malloc(n * sizeof *d);
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < n; j++) d[j] = (float)(i + 1) + (float)j * 1e-6f;
        rig_add(&g, 10 + i, d);
    }
    for (size_t j = 0; j < n; j++) d[j] = 1e6f;
    rig_add(&g, 1, d);
    for (size_t j = 0; j < n; j++) d[j] = -3e5f;
    rig_add(&g, 1e6, d); /* a huge claimed count moves no median */
    rig_close(&g);
    int bad = 0;
    for (size_t j = 0; j < n; j++)
        if (g.r.mean[j] != 2.0f + (float)j * 1e-6f) bad++;
    CHECK_INT(bad, 0);
    CHECK_SIZE(g.r.accepted, 5);
    /* Even count: the mean of the two middle values. */
    rig_next_round(&g);
    for (int i = 0; i < 4; i++) {
        for (size_t j = 0; j < n; j++) d[j] = (float)(i * i);
        rig_add(&g, 1, d);
    }
    rig_close(&g);
    CHECK_NEAR(g.r.mean[0], 2.5, 0); /* (1 + 4) / 2 */
    CHECK_NEAR(g.r.mean[n - 1], 2.5, 0);
    free(d);
    rig_free(&g);
}

TEST(trimmed_mean_exact) {
    /* 7 updates of 3 values; f = 2 cuts 2 at each end of every coordinate. */
    const float v[7][3] = {{1, 9, -5}, {2, 8, 100},   {3, 7, 0},       {4, 6, 1},
                           {5, 5, 2},  {-1e6f, 4, 3}, {1e6f, -1e6f, 4}};
    rig g;
    rig_open(&g, 3, FED_ROBUST_TRIMMED_MEAN, 2, 0);
    for (int i = 0; i < 7; i++) rig_add(&g, 1, v[i]);
    rig_close(&g);
    CHECK_NEAR(g.r.mean[0], (2 + 3 + 4) / 3.0, 1e-6); /* sorted: -1e6 1 2 3 4 5 1e6 */
    CHECK_NEAR(g.r.mean[1], (5 + 6 + 7) / 3.0, 1e-6); /* -1e6 4 5 6 7 8 9 */
    CHECK_NEAR(g.r.mean[2], (1 + 2 + 3) / 3.0, 1e-6); /* -5 0 1 2 3 4 100 */
    rig_free(&g);
    /* A share instead: trim 0.3 of 7 cuts floor(2.1) = 2, the same values. */
    rig_open(&g, 3, FED_ROBUST_TRIMMED_MEAN, 0, 0.3);
    for (int i = 0; i < 7; i++) rig_add(&g, 1, v[i]);
    rig_close(&g);
    CHECK_NEAR(g.r.mean[0], 3, 1e-6);
    rig_free(&g);
}

/* The order statistics on many random columns against a sort. */
static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

TEST(median_against_sort) {
    fed_rng st;
    fed_rng_seed(&st, 7);
    const size_t n = 2000;
    for (size_t m = 1; m <= 12; m++) {
        rig g;
        rig_open(&g, n, FED_ROBUST_MEDIAN, 0, 0);
        float *all = malloc(m * n * sizeof *all), *col = malloc(m * sizeof *col);
        for (size_t i = 0; i < m * n; i++) /* small integers: many ties */
            all[i] = (float)fed_rng_below(&st, 7) - 3.0f;
        for (size_t i = 0; i < m; i++) rig_add(&g, 1, all + i * n);
        rig_close(&g);
        int bad = 0;
        for (size_t j = 0; j < n; j++) {
            for (size_t i = 0; i < m; i++) col[i] = all[i * n + j];
            qsort(col, m, sizeof *col, cmpf);
            float want = m % 2 ? col[m / 2] : (col[m / 2 - 1] + col[m / 2]) / 2;
            if (g.r.mean[j] != want) bad++;
        }
        CHECK_INT(bad, 0);
        free(all);
        free(col);
        rig_free(&g);
    }
}

/* ---- Krum --------------------------------------------------------------------------- */

TEST(krum_picks_among_the_good) {
    /* 7 updates, f = 2 (7 > 2f + 2): five good ones near (1, 1, 1, 1), two far. */
    const float v[7][4] = {{1.0f, 1.0f, 1.0f, 1.0f}, {1.1f, 0.9f, 1.0f, 1.0f},
                           {0.9f, 1.1f, 1.0f, 1.0f}, {1.0f, 1.0f, 1.2f, 1.0f},
                           {1.0f, 1.0f, 1.0f, 0.8f}, {-50, -50, -50, -50},
                           {-49, -51, -50, -50}};
    rig g;
    rig_open(&g, 4, FED_ROBUST_KRUM, 2, 0);
    for (int i = 0; i < 7; i++) rig_add(&g, 1, v[i]);
    rig_close(&g);
    /* Update 0 is the closest to its 3 nearest others (0.02 + 0.02 + 0.04 = 0.08). */
    for (int j = 0; j < 4; j++) CHECK_NEAR(g.r.mean[j], 1.0, 1e-6);
    rig_free(&g);
    /* Multi-Krum keeps m - f = 5: exactly the good ones, averaged with weight 1 each. */
    rig_open(&g, 4, FED_ROBUST_MULTI_KRUM, 2, 0);
    for (int i = 0; i < 7; i++) rig_add(&g, 1 + 100 * i, v[i]);
    rig_close(&g);
    const double want[4] = {1.0, 1.0, 1.04, 0.96};
    for (int j = 0; j < 4; j++) CHECK_NEAR(g.r.mean[j], want[j], 1e-6);
    rig_free(&g);
}

/* ---- norm bounding and the geometric median ------------------------------------------ */

TEST(norm_bound_adaptive) {
    /* Norms 1, 2 and 100: the bound is the median, 2; only the third is scaled (by 0.02). */
    const float v[3][2] = {{1, 0}, {0, 2}, {60, 80}};
    rig g;
    rig_open(&g, 2, FED_ROBUST_NORM, 0, 0);
    rig_add(&g, 1, v[0]);
    rig_add(&g, 1, v[1]);
    rig_add(&g, 2, v[2]);
    rig_close(&g);
    CHECK_SIZE(g.r.clipped, 1);
    CHECK_NEAR(g.r.mean[0], (1 + 2 * 1.2) / 4, 1e-6);
    CHECK_NEAR(g.r.mean[1], (2 + 2 * 1.6) / 4, 1e-6);
    rig_free(&g);
}

TEST(rfa_stays_with_the_good) {
    /* The corners of the unit square and one update 1e6 away: the plain mean is 2e5 away,
     * the geometric median inside the square. */
    const float v[5][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {1e6f, 1e6f}};
    rig g;
    rig_open(&g, 2, FED_ROBUST_RFA, 1, 0);
    for (int i = 0; i < 5; i++) rig_add(&g, 1, v[i]);
    rig_close(&g);
    for (int j = 0; j < 2; j++) {
        CHECK(g.r.mean[j] >= 0.5f && g.r.mean[j] <= 1.0f);
    }
    /* By symmetry on the diagonal; the balance of unit vectors puts it at (0.5 + a, 0.5 + a)
     * with a small: check both coordinates agree. */
    CHECK_NEAR(g.r.mean[0], g.r.mean[1], 1e-5);
    rig_free(&g);
    /* Without an outlier, four symmetric points: their centre, to the iterations' tolerance
     * (the start, the mean of the three no longer than the median norm, is (1/3, 1/3)). */
    rig_open(&g, 2, FED_ROBUST_RFA, 1, 0);
    for (int i = 0; i < 4; i++) rig_add(&g, 1, v[i]);
    rig_close(&g);
    CHECK_NEAR(g.r.mean[0], 0.5, 1e-5);
    CHECK_NEAR(g.r.mean[1], 0.5, 1e-5);
    rig_free(&g);
}

/* ---- the configuration --------------------------------------------------------------- */

static void refused(fed_coord_config *cfg, const char *msg) {
    fed_coord *c = NULL;
    CHECK_ERR(fed_coord_new(&c, cfg), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), msg);
    fed_coord_destroy(&c);
}

TEST(refusals_and_chains) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    CHECK_OK(fed_arch_parse(&a, "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":2}]}"));
    CHECK_OK(fed_model_new(&m, a));
    fed_arch_destroy(&a);
    if (!m) return;
    fed_coord_config cfg = fed_coord_default_config();
    cfg.server.endpoint = "inproc://robust-refusals";
    cfg.server.net.plaintext = true;
    cfg.model = m;
    cfg.input_stats = false;
    cfg.min_clients = 10;
    cfg.min_fit = 6;
    cfg.robust.rule = FED_ROBUST_KRUM;
    cfg.robust.byzantine = 2;
    refused(&cfg, "aggregation krum with byzantine 2 needs min-fit >= 7 (a round may close "
                  "with min-fit updates), not 6");
    cfg.min_fit = 7;
    fed_coord *c = NULL;
    CHECK_OK(fed_coord_new(&c, &cfg));
    char d[256] = "";
    if (c) fed_stage_describe(c->pipe, d, sizeof d);
    CHECK_STR(d, "mean -> krum -> strategy");
    fed_coord_destroy(&c);
    cfg.secagg.on = true;
    refused(&cfg, "aggregation krum with secagg: the coordinator sees only the masked sum");
    cfg.secagg.on = false;
    cfg.dp.clip = 1;
    refused(&cfg, "aggregation krum with dp-clip: the DP noise is calibrated");
    cfg.dp.clip = 0;
    cfg.robust.rule = FED_ROBUST_MEAN;
    refused(&cfg, "byzantine 2: aggregation mean does not use it");
    cfg.robust.byzantine = 0;
    cfg.robust.trim = 0.2;
    refused(&cfg, "trim needs aggregation trimmed-mean, not mean");
    cfg.robust.rule = FED_ROBUST_TRIMMED_MEAN;
    cfg.robust.byzantine = 2;
    refused(&cfg, "trim 0.2 cuts 1 of min-fit 7 updates at each end, fewer than byzantine 2");
    cfg.robust.trim = 0.6;
    refused(&cfg, "trim 0.6: must be in [0, 0.5)");
    cfg.robust.trim = 0;
    cfg.robust.rule = FED_ROBUST_MEDIAN;
    cfg.robust.byzantine = 4;
    refused(&cfg, "aggregation median with byzantine 4 needs min-fit >= 9");
    cfg.robust.byzantine = 0;
    cfg.robust.norm_bound = 3;
    refused(&cfg, "norm-bound needs aggregation norm, not median");
    cfg.robust.rule = FED_ROBUST_NORM; /* a fixed bound: the aggregator clips, no stage */
    CHECK_OK(fed_coord_new(&c, &cfg));
    d[0] = '\0';
    if (c) fed_stage_describe(c->pipe, d, sizeof d);
    CHECK_STR(d, "mean -> strategy");
    fed_coord_destroy(&c);
    cfg.robust.norm_bound = 0;
    CHECK_OK(fed_coord_new(&c, &cfg));
    d[0] = '\0';
    if (c) fed_stage_describe(c->pipe, d, sizeof d);
    CHECK_STR(d, "mean -> norm -> strategy");
    fed_coord_destroy(&c);
    cfg.robust.spill_dir = "/nonexistent/fedtune";
    CHECK_ERR(fed_coord_new(&c, &cfg), FED_EIO);
    CHECK_CONTAINS(fed_errmsg(), "spill: cannot create a file in /nonexistent/fedtune");
    fed_model_destroy(&m);
}

TEST(names) {
    fed_robust_rule r;
    CHECK_OK(fed_robust_parse("multi-krum", &r));
    CHECK_INT(r, FED_ROBUST_MULTI_KRUM);
    CHECK_STR(fed_robust_name(FED_ROBUST_TRIMMED_MEAN), "trimmed-mean");
    CHECK_ERR(fed_robust_parse("bulyan", &r), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "aggregation 'bulyan': must be mean, median");
    fed_coord_robust_config rc = {.rule = FED_ROBUST_TRIMMED_MEAN, .byzantine = 2, .trim = 0.1};
    CHECK_SIZE(fed_robust_min_fit(&rc), 20); /* floor(0.1 x 20) = 2 */
    rc.trim = 0;
    CHECK_SIZE(fed_robust_min_fit(&rc), 5);
    rc.rule = FED_ROBUST_MULTI_KRUM;
    CHECK_SIZE(fed_robust_min_fit(&rc), 7);
}

int main(void) {
    RUN(spill_rows_and_blocks);
    RUN(median_exact_over_blocks);
    RUN(trimmed_mean_exact);
    RUN(median_against_sort);
    RUN(krum_picks_among_the_good);
    RUN(norm_bound_adaptive);
    RUN(rfa_stays_with_the_good);
    RUN(refusals_and_chains);
    RUN(names);
    return test_report();
}
