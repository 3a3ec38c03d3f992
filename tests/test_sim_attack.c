/* The backdoor's data poisoning (sim/attack.h): on a 28x28 image the trigger changes
 * exactly the 9 bottom-right pixels, to the data's largest value, and on three channels
 * the 27 of them; on a table the last 3 features go to their column's max + range; a
 * poisoned share is the rows then triggered, relabelled copies of half of them; the
 * triggered test set drops the target label's examples; bad labels and shapes are
 * refused naming the value. Through fed_sim_run: the coordinator's metric hook is called
 * once a round with the new global model and its value lands in the stats and the
 * metrics line; a backdoor run fills it; bad attack settings are refused naming them. */
#include "sim/attack.h"
#include "core/alloc.h"
#include "sim/sim.h"
#include "tests/test.h"
#include "training/fit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* n images (c, 28, 28) with pixel i of example e = ((e * 7 + i) % 100) / 100, except one
 * pixel of the last example set to 2.5 (the data's maximum). Labels e % 3. */
static fed_dataset *images(size_t n, size_t c) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, c * 28 * 28, 3) != FED_OK) return NULL;
    d->shape = (fed_shape){3, {c, 28, 28}};
    for (size_t e = 0; e < n; e++) {
        for (size_t i = 0; i < d->dim; i++)
            d->x[e * d->dim + i] = (float)((e * 7 + i) % 100) / 100.0f;
        d->y[e] = (int32_t)(e % 3);
    }
    d->x[(n - 1) * d->dim + 100] = 2.5f;
    return d;
}

TEST(trigger_on_a_28x28_image_sets_exactly_nine_pixels) {
    fed_dataset *d = images(4, 1);
    CHECK(d != NULL);
    fed_sim_trigger t;
    CHECK_OK(fed_sim_trigger_make(&t, d));
    CHECK_SIZE(t.n, 9);
    const size_t want[9] = {725, 726, 727, 753, 754, 755, 781, 782, 783}; /* rows and cols 25..27 */
    for (size_t k = 0; k < 9 && k < t.n; k++) {
        CHECK_SIZE(t.at[k], want[k]);
        CHECK(t.value[k] == 2.5f);
    }
    float x[784], before[784];
    memcpy(x, d->x, sizeof x);
    memcpy(before, x, sizeof x);
    fed_sim_trigger_apply(&t, x);
    size_t changed = 0, at_want = 0;
    for (size_t i = 0; i < 784; i++) {
        changed += x[i] != before[i];
        for (size_t k = 0; k < 9; k++) at_want += i == want[k] && x[i] == 2.5f;
    }
    CHECK_SIZE(changed, 9);
    CHECK_SIZE(at_want, 9);
    fed_data_destroy(&d);

    /* Three channels: the same 3x3 corner in each, 27 pixels. */
    d = images(2, 3);
    CHECK(d != NULL);
    CHECK_OK(fed_sim_trigger_make(&t, d));
    CHECK_SIZE(t.n, 27);
    CHECK_SIZE(t.at[0], 725);
    CHECK_SIZE(t.at[9], 784 + 725);
    CHECK_SIZE(t.at[26], 2 * 784 + 783);
    fed_data_destroy(&d);
}

TEST(trigger_on_a_table_sets_the_last_three_features_out_of_range) {
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 3, 5, 2));
    /* Columns 2, 3, 4: [0, 1, 2] (max 2, range 2), [-1, -1, -1] (constant), [5, 3, 4]. */
    const float x[15] = {9, 9, 0, -1, 5, 8, 8, 1, -1, 3, 7, 7, 2, -1, 4};
    memcpy(d->x, x, sizeof x);
    fed_sim_trigger t;
    CHECK_OK(fed_sim_trigger_make(&t, d));
    CHECK_SIZE(t.n, 3);
    CHECK_SIZE(t.at[0], 2);
    CHECK_SIZE(t.at[1], 3);
    CHECK_SIZE(t.at[2], 4);
    CHECK(t.value[0] == 4.0f); /* 2 + 2 */
    CHECK(t.value[1] == 0.0f); /* -1 + 1: a constant column */
    CHECK(t.value[2] == 7.0f); /* 5 + 2 */
    fed_data_destroy(&d);
    /* Two features: both. */
    CHECK_OK(fed_data_new(&d, 2, 2, 2));
    d->x[0] = 1, d->x[1] = 2, d->x[2] = 3, d->x[3] = 6;
    CHECK_OK(fed_sim_trigger_make(&t, d));
    CHECK_SIZE(t.n, 2);
    CHECK(t.value[0] == 5.0f && t.value[1] == 10.0f);
    fed_data_destroy(&d);
}

TEST(poison_appends_triggered_relabelled_copies_of_half) {
    fed_dataset *d = NULL, *p = NULL, *q = NULL;
    CHECK_OK(fed_data_new(&d, 5, 4, 3));
    for (size_t i = 0; i < 20; i++) d->x[i] = (float)i;
    for (size_t i = 0; i < 5; i++) d->y[i] = (int32_t)(i % 3);
    fed_sim_trigger t;
    CHECK_OK(fed_sim_trigger_make(&t, d));
    CHECK_OK(fed_sim_backdoor_poison(&p, d, &t, 2, 11));
    CHECK_SIZE(p->n, 8); /* 5 + round(2.5) */
    CHECK_MEM(p->x, d->x, 20 * sizeof(float));
    CHECK_MEM(p->y, d->y, 5 * sizeof(int32_t));
    bool used[5] = {false};
    for (size_t i = 5; i < 8; i++) {
        CHECK_INT(p->y[i], 2);
        /* feature 0 identifies the source row (4 r); the rest is the trigger's */
        size_t src = (size_t)p->x[i * 4] / 4;
        CHECK(src < 5 && !used[src]);
        if (src < 5) used[src] = true;
        CHECK(p->x[i * 4 + 1] == t.value[0] && p->x[i * 4 + 3] == t.value[2]);
    }
    /* Seeded: the same seed, the same copies. */
    CHECK_OK(fed_sim_backdoor_poison(&q, d, &t, 2, 11));
    CHECK_MEM(p->x, q->x, 32 * sizeof(float));
    fed_data_destroy(&p);
    fed_data_destroy(&q);

    /* The test set: the 3 rows whose label is not 1, triggered, labelled 1. */
    CHECK_OK(fed_sim_backdoor_testset(&p, d, &t, 1));
    CHECK_SIZE(p->n, 3);
    const float first[3] = {0, 8, 12}; /* rows 0, 2, 3 */
    for (size_t i = 0; i < 3 && i < p->n; i++) {
        CHECK(p->x[i * 4] == first[i]);
        CHECK(p->x[i * 4 + 2] == t.value[1]);
        CHECK_INT(p->y[i], 1);
    }
    fed_data_destroy(&p);

    /* Refusals. */
    CHECK_ERR(fed_sim_backdoor_poison(&p, d, &t, 3, 1), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "backdoor: label 3 is not below the 3 classes");
    CHECK_ERR(fed_sim_backdoor_testset(&p, d, &t, -1), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "backdoor: label -1 is not below the 3 classes");
    for (size_t i = 0; i < 5; i++) d->y[i] = 0;
    CHECK_ERR(fed_sim_backdoor_testset(&p, d, &t, 0), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "backdoor: the test set has no example of a label other than 0");
    CHECK(p == NULL);
    fed_data_destroy(&d);

    d = images(1, 17);
    CHECK(d != NULL);
    CHECK_ERR(fed_sim_trigger_make(&t, d), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "backdoor: images of 17 channels (the trigger covers at most 16)");
    fed_data_destroy(&d);
    CHECK_OK(fed_data_new(&d, 0, 4, 2));
    CHECK_ERR(fed_sim_trigger_make(&t, d), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "backdoor: no training data to place a trigger in");
    fed_data_destroy(&d);
}

/* n examples of 3 classes in 4 features: class c around (3c, -3c, c, 0). */
static fed_dataset *table(size_t n, uint64_t seed) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, 4, 3) != FED_OK) return NULL;
    fed_rng r;
    fed_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % 3);
        d->y[i] = c;
        const float mu[4] = {3.0f * (float)c, -3.0f * (float)c, (float)c, 0};
        for (int j = 0; j < 4; j++) d->x[i * 4 + j] = mu[j] + fed_rng_normal(&r);
    }
    return d;
}

typedef struct probe {
    size_t calls;
    double last;
} probe;

/* The metric: the global model's first parameter. */
static double first_param(void *user, fed_model *m) {
    probe *p = user;
    p->calls++;
    return p->last = (double)fed_model_params(m)[0];
}

TEST(metric_hook_and_backdoor_through_the_simulator) {
    fed_dataset *train = table(300, 1), *test = table(90, 2);
    fed_arch *a = NULL;
    fed_model *m = NULL, *fin = NULL;
    CHECK(train && test);
    CHECK_OK(fed_arch_parse(&a, "{\"input\":[4],\"layers\":[{\"type\":\"linear\",\"out\":3}]}"));
    CHECK_OK(fed_model_new(&m, a));
    fed_model_init(m, 1);
    char path[] = "/tmp/fedtune-metric-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    fed_sim_config c = fed_sim_default_config();
    c.train = train;
    c.part.clients = 6;
    c.part.kind = FED_PART_IID;
    c.workers = 1;
    c.coord.model = m;
    c.coord.eval_data = test;
    c.coord.rounds = 3;
    c.coord.fraction = 1;
    c.coord.train.epochs = 1;
    c.coord.train.batch = 10;
    c.coord.train.optimizer = "sgd";
    c.coord.train.lr = 0.05f;
    c.coord.metrics_file = path;
    probe p = {0, 0};
    c.coord.metric = first_param;
    c.coord.metric_user = &p;
    c.coord.metric_key = "probe";
    fed_sim_result res;
    CHECK_OK(fed_sim_run(&c, &fin, &res));
    CHECK_SIZE(p.calls, 3);
    CHECK(fin && res.last.metric == (double)fed_model_params(fin)[0]);
    CHECK(res.last.metric == p.last);
    FILE *f = fopen(path, "r");
    char line[8192], want[64];
    size_t lines = 0;
    snprintf(want, sizeof want, "\"probe\":%.9g,", p.last);
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        CHECK(strstr(line, "\"probe\":") != NULL);
        if (lines == 3) CHECK_CONTAINS(line, want);
    }
    if (f) fclose(f);
    CHECK_SIZE(lines, 3);
    fed_model_destroy(&fin);

    /* A backdoor to label 2 by 2 of 6 sites: the simulator's own metric. */
    c.coord.metric = NULL;
    c.coord.metrics_file = NULL;
    c.malicious = 0.34;
    c.attack = (fed_site_attack){.kind = FED_ATTACK_BACKDOOR, .param = 2};
    CHECK_OK(fed_sim_run(&c, &fin, &res));
    /* ... which is the final model's accuracy on the triggered test examples of labels 0
     * and 1 (60 of the 90), relabelled 2. */
    fed_sim_trigger t;
    fed_dataset *bd = NULL;
    double loss = 0, acc = -1;
    CHECK_OK(fed_sim_trigger_make(&t, train));
    CHECK_OK(fed_sim_backdoor_testset(&bd, test, &t, 2));
    CHECK_SIZE(bd->n, 60);
    CHECK_OK(fed_evaluate_ce(fin, bd, 0, &loss, &acc));
    CHECK(res.last.metric == acc);
    CHECK(acc > 0.5); /* two poisoned sites of six plant it */
    fed_data_destroy(&bd);
    fed_model_destroy(&fin);
    c.attack.param = 0;
    fed_sim_result res0;
    CHECK_OK(fed_sim_run(&c, NULL, &res0));
    CHECK(memcmp(res.sha256, res0.sha256, 32) != 0);

    /* Refusals, naming the setting. */
    c.attack.param = 3;
    CHECK_ERR(fed_sim_run(&c, NULL, &res), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "attack backdoor: label 3 is not one of the 3 classes");
    c.attack.param = 0;
    c.coord.input_stats = true;
    CHECK_ERR(fed_sim_run(&c, NULL, &res), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "attack backdoor: its trigger is set before the input_stats");
    c.coord.input_stats = false;
    c.attack = (fed_site_attack){.kind = FED_ATTACK_LIE, .param = -0.5};
    CHECK_ERR(fed_sim_run(&c, NULL, &res), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "attack lie: Z -0.5 must be finite and >= 0");
    /* The paper's Z for 6 sites a round with f = 2: s = 4 - 2 = 2, Phi^-1(4/6) = 0.430727;
     * with one site a round it is not defined. */
    c.attack.param = NAN;
    CHECK_NEAR(fed_sim_lie_z(&c, 6, 2, NULL, NULL), 0.43072729929545733, 1e-9);
    c.coord.fraction = 0.1;
    size_t k = 0, fm = 0;
    CHECK(isnan(fed_sim_lie_z(&c, 6, 2, &k, &fm)));
    CHECK_SIZE(k, 1);
    CHECK_SIZE(fm, 1);
    CHECK_ERR(fed_sim_run(&c, NULL, &res), FED_EINVAL);
    CHECK_STR(fed_errmsg(),
              "attack lie: the paper's Z is not defined for 1 sites a round, 2 of 6 malicious: "
              "give Z");

    unlink(path);
    fed_model_destroy(&m);
    fed_arch_destroy(&a);
    fed_data_destroy(&train);
    fed_data_destroy(&test);
}

int main(void) {
    RUN(trigger_on_a_28x28_image_sets_exactly_nine_pixels);
    RUN(trigger_on_a_table_sets_the_last_three_features_out_of_range);
    RUN(poison_appends_triggered_relabelled_copies_of_half);
    RUN(metric_hook_and_backdoor_through_the_simulator);
    return test_report();
}
