/* Tests of what happens to a data set after loading: the cleaning report (checked against
 * a brute-force count), subsets, stratified seeded splits (exact counts per class,
 * determinism), the standardizer and its JSON form, order and gather, augmentation
 * (shift, flip, noise), and splits, reports and JSON under fail-the-Nth-allocation. */
#include "core/alloc_internal.h"
#include "dataset/dataset.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t set_hash(const fed_dataset *d) {
    return fnv1a(d->x, d->n * d->dim * sizeof(float)) ^ fnv1a(d->y, d->n * sizeof(int32_t)) * 3;
}

/* A table whose row i has features (i, i * 0.5) and label labels[i]. */
static fed_dataset *table(const int32_t *labels, size_t n, size_t num_classes) {
    fed_dataset *d = NULL;
    if (fed_data_new(&d, n, 2, num_classes) != FED_OK) return NULL;
    for (size_t i = 0; i < n; i++) {
        d->x[2 * i] = (float)i;
        d->x[2 * i + 1] = (float)i * 0.5f;
        d->y[i] = labels[i];
    }
    return d;
}

TEST(new_and_destroy) {
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 3, 4, 2));
    if (!d) return;
    CHECK_SIZE(d->n, 3);
    CHECK_SIZE(d->dim, 4);
    CHECK_INT(d->shape.ndim, 1);
    CHECK_SIZE(d->shape.d[0], 4);
    CHECK(((uintptr_t)d->x % FED_ALIGN) == 0);
    float zero[12] = {0};
    CHECK_MEM(d->x, zero, sizeof zero);
    CHECK(d->y[2] == 0 && d->class_names == NULL);
    fed_data_destroy(&d);
    CHECK(d == NULL);
    CHECK_OK(fed_data_new(&d, 0, 1, 1));
    CHECK(d && d->n == 0);
    fed_data_destroy(&d);
    CHECK_ERR(fed_data_new(&d, 3, 0, 2), FED_EINVAL);
    CHECK_ERR(fed_data_new(&d, 3, 2, 0), FED_EINVAL);
    CHECK(d == NULL);
}

TEST(report_on_a_crafted_set) {
    /* dim 3; column 1 is constant; rows:
     *   0 [1 2 3] y0
     *   1 [1 2 3] y0   duplicate of 0
     *   2 [1 2 3] y1   conflict (same features as 0, other label)
     *   3 [1 2 3] y1   duplicate of 2
     *   4 [4 2 5] y1
     *   5 [0 2 7] y2
     *   6 [-0 2 7] y2  duplicate of 5 (-0 == 0)
     *   7 [9 2 7] y2
     * class counts 2, 3, 3, 0 (class 3 empty): imbalance 3 / 2. */
    const float x[] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 4, 2, 5, 0, 2, 7, -0.0f, 2, 7, 9, 2, 7};
    const int32_t y[] = {0, 0, 1, 1, 1, 2, 2, 2};
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 8, 3, 4));
    if (!d) return;
    memcpy(d->x, x, sizeof x);
    memcpy(d->y, y, sizeof y);
    fed_data_report r;
    CHECK_OK(fed_data_report_new(&r, d));
    CHECK_SIZE(r.n, 8);
    CHECK_SIZE(r.dim, 3);
    CHECK_SIZE(r.num_classes, 4);
    CHECK_SIZE(r.duplicates, 3);
    CHECK_SIZE(r.conflicts, 1);
    CHECK_SIZE(r.constant_features, 1);
    CHECK(r.class_counts && r.class_counts[0] == 2 && r.class_counts[1] == 3 &&
          r.class_counts[2] == 3 && r.class_counts[3] == 0);
    CHECK_NEAR(r.imbalance, 1.5, 0.0);
    CHECK_SIZE(r.empty_classes, 1);
    CHECK_SIZE(r.nonfinite, 0);
    fed_data_report_free(&r);
    CHECK(r.class_counts == NULL);
    d->x[4] = NAN;
    d->x[5] = INFINITY;
    CHECK_OK(fed_data_report_new(&r, d));
    CHECK_SIZE(r.nonfinite, 2);
    CHECK_SIZE(r.duplicates, 2); /* row 1 now differs from row 0 */
    fed_data_report_free(&r);
    d->y[0] = 4;
    CHECK_ERR(fed_data_report_new(&r, d), FED_EINVAL);
    CHECK(r.class_counts == NULL);
    fed_data_destroy(&d);
}

TEST(report_matches_brute_force) {
    /* Many collisions: 3000 rows over 10 x 10 feature values and 3 labels. */
    const size_t n = 3000;
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, n, 2, 3));
    if (!d) return;
    fed_rng r;
    fed_rng_seed(&r, 5);
    for (size_t i = 0; i < n; i++) {
        d->x[2 * i] = (float)fed_rng_below(&r, 10);
        d->x[2 * i + 1] = (float)fed_rng_below(&r, 10) * 0.1f;
        d->y[i] = (int32_t)fed_rng_below(&r, 3);
    }
    size_t dup = 0, conf = 0;
    for (size_t i = 0; i < n; i++) {
        bool same_f = false, same_both = false;
        for (size_t j = 0; j < i; j++) {
            if (d->x[2 * i] == d->x[2 * j] && d->x[2 * i + 1] == d->x[2 * j + 1]) {
                same_f = true;
                same_both |= d->y[i] == d->y[j];
            }
        }
        dup += same_both;
        conf += same_f && !same_both;
    }
    fed_data_report rep;
    CHECK_OK(fed_data_report_new(&rep, d));
    CHECK_SIZE(rep.duplicates, dup);
    CHECK_SIZE(rep.conflicts, conf);
    CHECK_SIZE(rep.duplicates + rep.conflicts, n - 100); /* 100 distinct feature rows */
    CHECK_SIZE(rep.constant_features, 0);
    fed_data_report_free(&rep);
    fed_data_destroy(&d);
}

TEST(subset_copies_rows) {
    const int32_t y[] = {0, 1, 1, 0};
    fed_dataset *d = table(y, 4, 2), *s = NULL;
    CHECK(d != NULL);
    if (!d) return;
    d->shape = (fed_shape){2, {1, 2, 0}};
    d->class_names = calloc(2, sizeof(char *)); /* as a loader would leave them */
    if (d->class_names) {
        d->class_names[0] = fed_strdup("no");
        d->class_names[1] = fed_strdup("yes");
    }
    const size_t idx[] = {3, 1, 3};
    CHECK_OK(fed_data_subset(&s, d, idx, 3));
    if (s) {
        const float want[] = {3, 1.5f, 1, 0.5f, 3, 1.5f};
        CHECK_MEM(s->x, want, sizeof want);
        CHECK(s->y[0] == 0 && s->y[1] == 1 && s->y[2] == 0);
        CHECK_INT(s->shape.ndim, 2);
        CHECK(s->class_names && !strcmp(s->class_names[1], "yes"));
        CHECK(s->class_names && d->class_names && s->class_names[1] != d->class_names[1]);
        CHECK_SIZE(s->stats.rows_read, 0);
    }
    fed_data_destroy(&s);
    const size_t bad[] = {4};
    CHECK_ERR(fed_data_subset(&s, d, bad, 1), FED_EINVAL);
    CHECK(s == NULL);
    CHECK_OK(fed_data_subset(&s, d, idx, 0));
    CHECK(s && s->n == 0);
    fed_data_destroy(&s);
    /* class_names came from calloc above, but fed_free is free. */
    fed_data_destroy(&d);
}

static size_t count_class(const fed_dataset *d, int32_t c) {
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++) k += d->y[i] == c;
    return k;
}

TEST(split_exact_counts) {
    /* Class 0: 10 examples, class 1: 5, class 2: 1, class 3: none, interleaved. */
    int32_t y[16];
    size_t k = 0;
    for (int i = 0; i < 10; i++) {
        y[k++] = 0;
        if (i < 5) y[k++] = 1;
    }
    y[k++] = 2;
    fed_dataset *d = table(y, k, 4), *tr = NULL, *va = NULL, *te = NULL;
    CHECK(d != NULL);
    if (!d) return;
    /* Rounding: round(m * frac) per part, halves up; then test, else val, gives one back
     * until train keeps one. Class 0: 2 + 2 + 6, class 1: 1 + 1 + 3, class 2: 0 + 0 + 1. */
    CHECK_OK(fed_data_split(d, 0.2, 0.2, 7, &tr, &va, &te));
    if (tr && va && te) {
        CHECK_SIZE(tr->n, 10);
        CHECK_SIZE(va->n, 3);
        CHECK_SIZE(te->n, 3);
        CHECK_SIZE(count_class(tr, 0), 6);
        CHECK_SIZE(count_class(va, 0), 2);
        CHECK_SIZE(count_class(te, 0), 2);
        CHECK_SIZE(count_class(tr, 1), 3);
        CHECK_SIZE(count_class(va, 1), 1);
        CHECK_SIZE(count_class(te, 1), 1);
        CHECK_SIZE(count_class(tr, 2), 1);
        CHECK_SIZE(tr->num_classes, 4);
        /* A partition of the rows (feature 0 is the row number), each part in file order,
         * rows intact. */
        int seen[16] = {0};
        const fed_dataset *parts[3] = {tr, va, te};
        for (int p = 0; p < 3; p++) {
            for (size_t i = 0; i < parts[p]->n; i++) {
                size_t row = (size_t)parts[p]->x[2 * i];
                CHECK(row < k && parts[p]->y[i] == y[row]);
                CHECK(parts[p]->x[2 * i + 1] == (float)row * 0.5f);
                if (row < k) seen[row]++;
                if (i) CHECK(parts[p]->x[2 * i] > parts[p]->x[2 * i - 2]);
            }
        }
        for (size_t i = 0; i < k; i++) CHECK_INT(seen[i], 1);
    }
    uint64_t h = set_hash(tr) ^ set_hash(va) * 5 ^ set_hash(te) * 7;
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_data_destroy(&te);
    /* Same seed, same bits; another seed, another split. */
    CHECK_OK(fed_data_split(d, 0.2, 0.2, 7, &tr, &va, &te));
    if (tr && va && te) CHECK(h == (set_hash(tr) ^ set_hash(va) * 5 ^ set_hash(te) * 7));
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_data_destroy(&te);
    CHECK_OK(fed_data_split(d, 0.2, 0.2, 8, &tr, &va, &te));
    if (tr && va && te) CHECK(h != (set_hash(tr) ^ set_hash(va) * 5 ^ set_hash(te) * 7));
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_data_destroy(&te);

    /* Shares that would empty train: m = 2 at 0.25 / 0.25 rounds to 1 + 1, test gives one
     * back; m = 1 at 0.5 / 0.45 rounds to 1 + 0, val gives it back. */
    const int32_t y2[] = {0, 0, 1};
    fed_dataset *d2 = table(y2, 3, 2);
    CHECK(d2 != NULL);
    if (d2) {
        CHECK_OK(fed_data_split(d2, 0.25, 0.25, 1, &tr, &va, &te));
        CHECK(tr && tr->n == 2 && count_class(tr, 0) == 1 && count_class(tr, 1) == 1);
        CHECK(va && va->n == 1 && va->y[0] == 0);
        CHECK(te && te->n == 0);
        fed_data_destroy(&tr);
        fed_data_destroy(&va);
        fed_data_destroy(&te);
        CHECK_OK(fed_data_split(d2, 0.5, 0.45, 1, &tr, &va, &te));
        CHECK(tr && count_class(tr, 1) == 1 && count_class(tr, 0) == 1);
        CHECK(va && va->n == 1 && te && te->n == 0);
        fed_data_destroy(&tr);
        fed_data_destroy(&va);
        fed_data_destroy(&te);
        /* Validation only. */
        CHECK_OK(fed_data_split(d2, 0.5, 0.0, 1, &tr, &va, NULL));
        CHECK(tr && va && tr->n == 2 && va->n == 1);
        fed_data_destroy(&tr);
        fed_data_destroy(&va);
    }
    fed_data_destroy(&d2);

    CHECK_ERR(fed_data_split(d, 1.0, 0.0, 1, &tr, &va, &te), FED_EINVAL);
    CHECK_ERR(fed_data_split(d, -0.1, 0.0, 1, &tr, &va, &te), FED_EINVAL);
    CHECK_ERR(fed_data_split(d, (double)NAN, 0.0, 1, &tr, &va, &te), FED_EINVAL);
    CHECK_ERR(fed_data_split(d, 0.5, 0.5, 1, &tr, &va, &te), FED_EINVAL);
    CHECK_CONTAINS(fed_errmsg(), "sum below 1");
    CHECK_ERR(fed_data_split(d, 0.1, 0.0, 1, &tr, NULL, NULL), FED_EINVAL);
    CHECK(tr == NULL);
    fed_data_destroy(&d);
}

TEST(standardizer_numbers_and_json) {
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 4, 3, 1));
    if (!d) return;
    const float x[] = {1, 10, 5, 2, 20, 5, 3, 30, 5, 4, 40, 5};
    memcpy(d->x, x, sizeof x);
    fed_standardizer *s = NULL;
    CHECK_OK(fed_std_fit(&s, d));
    if (!s) return;
    CHECK_SIZE(s->dim, 3);
    CHECK_SIZE(s->len, 3);
    CHECK(s->mean[0] == 2.5f && s->mean[1] == 25.0f && s->mean[2] == 5.0f);
    CHECK(s->std[0] == (float)sqrt(1.25) && s->std[1] == (float)sqrt(125.0));
    CHECK(s->std[2] == 1.0f); /* constant feature */
    CHECK_OK(fed_std_apply(s, d));
    CHECK(d->x[0] == (1.0f - 2.5f) / (float)sqrt(1.25));
    CHECK(d->x[10] == (40.0f - 25.0f) / (float)sqrt(125.0));
    CHECK(d->x[11] == 0.0f);

    char *json = NULL;
    CHECK_OK(fed_std_to_json(s, &json));
    const char *head = "{\"dim\":3,\"mean\":[2.5,25,5],\"std\":[";
    CHECK(json && strncmp(json, head, strlen(head)) == 0);
    fed_standardizer *s2 = NULL;
    CHECK_OK(fed_std_from_json(&s2, json));
    if (s2) {
        CHECK_SIZE(s2->dim, 3);
        CHECK_SIZE(s2->len, 3);
        CHECK_MEM(s2->mean, s->mean, 3 * sizeof(float));
        CHECK_MEM(s2->std, s->std, 3 * sizeof(float));
    }
    fed_free(json);
    fed_std_destroy(&s2);

    /* Shortest float text: 0.1f prints as 0.1 and reads back bit for bit. */
    s->mean[0] = 0.1f;
    s->std[0] = 1.0f / 3.0f;
    CHECK_OK(fed_std_to_json(s, &json));
    CHECK(json && strstr(json, "\"mean\":[0.1,25,5]") && strstr(json, "\"std\":[0.33333334,"));
    CHECK_OK(fed_std_from_json(&s2, json));
    CHECK(s2 && s2->mean[0] == 0.1f && s2->std[0] == 1.0f / 3.0f);
    fed_free(json);
    fed_std_destroy(&s2);

    static const char *bad[] = {
        "",
        "[1]",
        "{\"dim\":3,\"mean\":[1,2,3]}",
        "{\"dim\":2.5,\"mean\":[1],\"std\":[1]}",
        "{\"dim\":3,\"mean\":[1,2],\"std\":[1,2]}",
        "{\"dim\":3,\"mean\":[1,2,3],\"std\":[1,0,1]}",
        "{\"dim\":3,\"mean\":[1,2,3],\"std\":[1,-1,1]}",
        "{\"dim\":3,\"mean\":[1,1e39,3],\"std\":[1,1,1]}",
        "{\"dim\":3,\"mean\":[1,\"2\",3],\"std\":[1,1,1]}",
        "{\"dim\":3,\"mean\":[1,2,3],\"std\":[1,1,1],\"x\":1}",
        "{\"dim\":0,\"mean\":[],\"std\":[]}",
        "{\"dim\":3,\"mean\":[1,2,3],\"std\":[1,1,1,1]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(fed_std_from_json(&s2, bad[i]), FED_EFORMAT);
        CHECK(s2 == NULL);
    }
    CHECK_CONTAINS(fed_errmsg(), "standardizer");
    CHECK_ERR(fed_std_from_json(&s2, "{\"dim\":3,\"mean\":[1,2,3],\"std\":[1,0,1]}"), FED_EFORMAT);
    CHECK_CONTAINS(fed_errmsg(), "std[1] must be a finite, positive number");

    fed_dataset *e = NULL;
    CHECK_OK(fed_data_new(&e, 2, 4, 1));
    if (e) CHECK_ERR(fed_std_apply(s, e), FED_ESHAPE);
    fed_data_destroy(&e);
    CHECK_OK(fed_data_new(&e, 0, 3, 1));
    fed_standardizer *s3 = NULL;
    if (e) CHECK_ERR(fed_std_fit(&s3, e), FED_EINVAL);
    fed_data_destroy(&e);
    fed_std_destroy(&s);
    CHECK(s == NULL);
    fed_std_destroy(&s);
    fed_data_destroy(&d);
}

TEST(standardizer_per_channel) {
    /* Two images of shape (2, 1, 2): channel 0 holds 0, 2, 4, 6, channel 1 holds 1 four
     * times and is constant. */
    fed_dataset *d = NULL;
    CHECK_OK(fed_data_new(&d, 2, 4, 1));
    if (!d) return;
    d->shape = (fed_shape){3, {2, 1, 2}};
    const float x[] = {0, 2, 1, 1, 4, 6, 1, 1};
    memcpy(d->x, x, sizeof x);
    fed_standardizer *s = NULL;
    CHECK_OK(fed_std_fit(&s, d));
    if (!s) return;
    CHECK_SIZE(s->len, 2);
    CHECK_SIZE(s->dim, 4);
    CHECK(s->mean[0] == 3.0f && s->std[0] == (float)sqrt(5.0));
    CHECK(s->mean[1] == 1.0f && s->std[1] == 1.0f);
    CHECK_OK(fed_std_apply(s, d));
    CHECK(d->x[5] == 3.0f / (float)sqrt(5.0) && d->x[6] == 0.0f);
    char *json = NULL;
    fed_standardizer *s2 = NULL;
    CHECK_OK(fed_std_to_json(s, &json));
    CHECK_OK(fed_std_from_json(&s2, json));
    CHECK(s2 && s2->len == 2 && s2->dim == 4 && s2->std[0] == s->std[0]);
    fed_free(json);
    fed_std_destroy(&s2);
    fed_std_destroy(&s);
    fed_data_destroy(&d);
}

TEST(order_and_gather) {
    size_t order[50];
    fed_data_order(order, 50, NULL);
    for (size_t i = 0; i < 50; i++) CHECK_SIZE(order[i], i);
    fed_rng r;
    fed_rng_seed(&r, 3);
    fed_data_order(order, 50, &r);
    int seen[50] = {0}, moved = 0;
    for (size_t i = 0; i < 50; i++) {
        if (order[i] < 50) seen[order[i]]++;
        moved += order[i] != i;
    }
    for (size_t i = 0; i < 50; i++) CHECK_INT(seen[i], 1);
    CHECK(moved > 25);
    const int32_t y[] = {4, 5, 6};
    fed_dataset *d = table(y, 3, 7);
    if (!d) return;
    const size_t idx[] = {2, 0};
    float bx[4];
    int32_t by[2];
    fed_data_gather(d, idx, 2, bx, by);
    CHECK(bx[0] == 2.0f && bx[1] == 1.0f && bx[2] == 0.0f && bx[3] == 0.0f);
    CHECK(by[0] == 6 && by[1] == 4);
    fed_data_destroy(&d);
}

TEST(augment_shift) {
    fed_augment a = {0};
    CHECK(fed_augment_is_identity(&a));
    a.shift = 2;
    CHECK(!fed_augment_is_identity(&a));
    /* A single lit pixel in the middle of a 9 x 9 image moves by at most 2 each way and
     * is never lost; every offset occurs. */
    fed_shape sh = {3, {1, 9, 9}};
    float img[81], scratch[81];
    int offsets[5][5] = {{0}};
    fed_rng r;
    fed_rng_seed(&r, 11);
    for (int t = 0; t < 400; t++) {
        memset(img, 0, sizeof img);
        img[4 * 9 + 4] = 1.0f;
        fed_augment_batch(img, 1, &sh, &a, &r, scratch);
        float sum = 0.0f;
        int at = -1;
        for (int i = 0; i < 81; i++) {
            sum += img[i];
            if (img[i] == 1.0f) at = i;
        }
        CHECK(sum == 1.0f && at >= 0);
        if (at < 0) continue;
        int dy = at / 9 - 4, dx = at % 9 - 4;
        CHECK(dy >= -2 && dy <= 2 && dx >= -2 && dx <= 2);
        if (dy >= -2 && dy <= 2 && dx >= -2 && dx <= 2) offsets[dy + 2][dx + 2]++;
    }
    int all = 1;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) all &= offsets[i][j] > 0;
    CHECK(all);

    /* A whole image: the same rng draws (dy, then dx, from [-2, 2]) predict the result,
     * zero fill included; both channels move together. */
    fed_shape s2 = {3, {2, 4, 5}};
    float x[40], orig[40], want[40], scr[40];
    for (int i = 0; i < 40; i++) orig[i] = (float)(i + 1);
    for (int t = 0; t < 20; t++) {
        fed_rng pred = r;
        int dy = (int)fed_rng_below(&pred, 5) - 2, dx = (int)fed_rng_below(&pred, 5) - 2;
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 5; j++) {
                    int si = i - dy, sj = j - dx;
                    want[c * 20 + i * 5 + j] =
                        si >= 0 && si < 4 && sj >= 0 && sj < 5 ? orig[c * 20 + si * 5 + sj] : 0.0f;
                }
        memcpy(x, orig, sizeof x);
        fed_augment_batch(x, 1, &s2, &a, &r, scr);
        CHECK_MEM(x, want, sizeof want);
    }
    /* A pixel in the corner leaves the frame or stays whole. */
    int left = 0;
    for (int t = 0; t < 100; t++) {
        memset(img, 0, sizeof img);
        img[0] = 1.0f;
        fed_augment_batch(img, 1, &sh, &a, &r, scratch);
        float sum = 0.0f;
        for (int i = 0; i < 81; i++) sum += img[i];
        CHECK(sum == 0.0f ||
              (sum == 1.0f && (img[0] == 1.0f || img[1] == 1.0f || img[2] == 1.0f ||
                               img[9] == 1.0f || img[10] == 1.0f || img[11] == 1.0f ||
                               img[18] == 1.0f || img[19] == 1.0f || img[20] == 1.0f)));
        left += sum == 0.0f;
    }
    CHECK(left > 40 && left < 95); /* P(left) = 16/25 */
}

TEST(augment_flip_and_noise) {
    fed_augment a = {.hflip = true};
    fed_shape sh = {3, {1, 2, 3}};
    const float orig[6] = {1, 2, 3, 4, 5, 6}, mirrored[6] = {3, 2, 1, 6, 5, 4};
    float x[64 * 6], scratch[6];
    for (int i = 0; i < 64; i++) memcpy(x + 6 * i, orig, sizeof orig);
    fed_rng r, r2;
    fed_rng_seed(&r, 2);
    r2 = r;
    fed_augment_batch(x, 64, &sh, &a, &r, scratch);
    int flipped = 0, exact = 1;
    for (int i = 0; i < 64; i++) {
        bool f = memcmp(x + 6 * i, mirrored, sizeof mirrored) == 0;
        exact &= f || memcmp(x + 6 * i, orig, sizeof orig) == 0;
        flipped += f;
    }
    CHECK(exact);
    CHECK(flipped > 16 && flipped < 48);
    /* Deterministic given the rng. */
    float y[64 * 6];
    for (int i = 0; i < 64; i++) memcpy(y + 6 * i, orig, sizeof orig);
    fed_augment_batch(y, 64, &sh, &a, &r2, scratch);
    CHECK_MEM(x, y, sizeof x);

    /* Noise: 20000 draws of N(0, 0.5^2) on a table; mean and std within 4 standard
     * errors (0.0035 and 0.0025). */
    enum { N = 20000 };
    static float z[N];
    for (int i = 0; i < N; i++) z[i] = 1.0f;
    fed_augment na = {.noise_std = 0.5f};
    fed_shape tab = {1, {1000}};
    fed_augment_batch(z, N / 1000, &tab, &na, &r, NULL);
    double m = 0.0, v = 0.0;
    for (int i = 0; i < N; i++) m += (double)z[i];
    m /= N;
    for (int i = 0; i < N; i++) v += ((double)z[i] - m) * ((double)z[i] - m);
    double sd = sqrt(v / N);
    CHECK_NEAR(m, 1.0, 4 * 0.5 / sqrt((double)N));
    CHECK_NEAR(sd, 0.5, 4 * 0.5 / sqrt(2.0 * N));
}

/* fed_std_to_json then fed_std_from_json, as one call for the allocation harness. */
static fed_err std_round_trip(const fed_standardizer *s, char **json, fed_standardizer **s2) {
    fed_err e = fed_std_to_json(s, json);
    return e ? e : fed_std_from_json(s2, *json);
}

TEST(prep_under_allocation_failure) {
    int32_t y[30];
    for (int i = 0; i < 30; i++) y[i] = i % 3;
    fed_dataset *d = table(y, 30, 3);
    if (!d) return;
    d->class_names = fed_calloc(3, sizeof(char *));
    for (int c = 0; d->class_names && c < 3; c++) d->class_names[c] = fed_strdup("cls");
    fed_dataset *tr = NULL, *va = NULL, *te = NULL;
    FOR_EACH_ALLOC_FAILURE(f) {
        ALLOC_TRY(f, fed_data_split(d, 0.2, 0.1, 9, &tr, &va, &te));
        if (f.failed) {
            CHECK(tr == NULL && va == NULL && te == NULL);
            continue;
        }
        CHECK(tr && va && te && tr->n == 21 && va->n == 6 && te->n == 3);
    }
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_data_destroy(&te);

    FOR_EACH_ALLOC_FAILURE(f) {
        fed_data_report r;
        if (ALLOC_TRY(f, fed_data_report_new(&r, d)) == FED_OK) {
            CHECK(r.class_counts && r.class_counts[2] == 10);
            fed_data_report_free(&r);
        } else {
            CHECK(r.class_counts == NULL);
        }
    }

    fed_standardizer *s = NULL;
    CHECK_OK(fed_std_fit(&s, d));
    if (s) {
        FOR_EACH_ALLOC_FAILURE(f) {
            char *json = NULL;
            fed_standardizer *s2 = NULL;
            fed_err e = ALLOC_TRY(f, std_round_trip(s, &json, &s2));
            fed_free(json);
            if (e == FED_OK)
                CHECK(s2 && s2->mean[1] == s->mean[1]);
            else
                CHECK(s2 == NULL);
            fed_std_destroy(&s2);
        }
    }
    fed_std_destroy(&s);
    fed_data_destroy(&d);
}

int main(void) {
    RUN(new_and_destroy);
    RUN(report_on_a_crafted_set);
    RUN(report_matches_brute_force);
    RUN(subset_copies_rows);
    RUN(split_exact_counts);
    RUN(standardizer_numbers_and_json);
    RUN(standardizer_per_channel);
    RUN(order_and_gather);
    RUN(augment_shift);
    RUN(augment_flip_and_noise);
    RUN(prep_under_allocation_failure);
    return test_report();
}
