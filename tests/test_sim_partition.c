/* The data partitioners of sim/partition.h: for every kind, that each example lands in
 * exactly one client with ascending indices, that a seed fixes the bytes and another
 * seed changes them; then each kind's own promise (equal IID sizes, Dirichlet skew
 * following alpha and min_size, whole label-sorted shards, exactly K labels per client),
 * spec parsing with malformed input, every configuration error with its message, the
 * statistics and the one-line description on a partition worked out by hand, 10,000
 * clients at once, and allocation failures. */
#include "sim/partition.h"
#include "core/alloc_internal.h"
#include "core/rng.h"
#include "tests/test.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N_BIG   6000 /* a small MNIST: 10 classes of 600 */
#define CLASSES 10

/* labels[i] = i % classes: balanced, interleaved (so sorting by label matters). */
static void balanced_labels(int32_t *labels, size_t n, size_t classes) {
    for (size_t i = 0; i < n; i++) labels[i] = (int32_t)(i % classes);
}

/* Examples per client. */
static size_t size_of(const fed_partition *p, size_t c) {
    return p->offsets[c + 1] - p->offsets[c];
}

/* Distinct labels of client c; hist is scratch of `classes` zeros, left zeroed. */
static size_t labels_of(const fed_partition *p, size_t c, const int32_t *labels, size_t *hist,
                        size_t classes) {
    size_t distinct = 0;
    for (size_t k = p->offsets[c]; k < p->offsets[c + 1]; k++)
        if (hist[labels[p->index[k]]]++ == 0) distinct++;
    for (size_t l = 0; l < classes; l++) hist[l] = 0;
    return distinct;
}

/* The structural promises every partition keeps, one CHECK each. */
static void check_partition(const fed_partition *p, size_t n, size_t clients) {
    CHECK(p != NULL);
    if (!p) return;
    CHECK_SIZE(p->clients, clients);
    CHECK_SIZE(p->n, n);
    CHECK_SIZE(p->offsets[0], 0);
    CHECK_SIZE(p->offsets[clients], n);
    bool monotone = true, ascending = true, in_range = true, once = true;
    for (size_t c = 0; c < clients; c++) {
        if (p->offsets[c + 1] < p->offsets[c]) monotone = false;
        for (size_t k = p->offsets[c] + 1; monotone && k < p->offsets[c + 1]; k++)
            if (p->index[k] <= p->index[k - 1]) ascending = false;
    }
    unsigned *seen = calloc(n, sizeof *seen);
    for (size_t k = 0; k < n; k++) {
        if (p->index[k] >= n)
            in_range = false;
        else
            seen[p->index[k]]++;
    }
    for (size_t i = 0; i < n; i++)
        if (seen[i] != 1) once = false;
    free(seen);
    CHECK(monotone);
    CHECK(ascending);
    CHECK(in_range);
    CHECK(once); /* with n indices in total: every example exactly once */
}

static bool same_partition(const fed_partition *a, const fed_partition *b) {
    return a->clients == b->clients && a->n == b->n &&
           memcmp(a->offsets, b->offsets, (a->clients + 1) * sizeof *a->offsets) == 0 &&
           memcmp(a->index, b->index, a->n * sizeof *a->index) == 0;
}

static fed_part_config config(fed_part_kind kind, size_t clients) {
    fed_part_config c = fed_part_default_config();
    c.kind = kind;
    c.clients = clients;
    return c;
}

/* ---- every kind ---------------------------------------------------------------------- */

TEST(every_kind_assigns_each_example_once_and_is_seeded) {
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    balanced_labels(labels, N_BIG, CLASSES);
    const fed_part_kind kinds[] = {FED_PART_IID, FED_PART_DIRICHLET, FED_PART_SHARDS,
                                   FED_PART_LABELS};
    for (size_t k = 0; k < 4; k++) {
        fed_part_config c = config(kinds[k], 100);
        c.min_size = 5;
        c.seed = 42;
        fed_partition *a = NULL, *b = NULL, *other = NULL;
        CHECK_OK(fed_partition_make(&a, labels, N_BIG, CLASSES, &c));
        CHECK_OK(fed_partition_make(&b, labels, N_BIG, CLASSES, &c));
        c.seed = 43;
        CHECK_OK(fed_partition_make(&other, labels, N_BIG, CLASSES, &c));
        check_partition(a, N_BIG, 100);
        check_partition(other, N_BIG, 100);
        if (a && b && other) {
            CHECK_MEM(a->offsets, b->offsets, 101 * sizeof *a->offsets);
            CHECK_MEM(a->index, b->index, N_BIG * sizeof *a->index);
            CHECK(!same_partition(a, other));
        }
        fed_partition_destroy(&a);
        fed_partition_destroy(&b);
        fed_partition_destroy(&other);
        CHECK(a == NULL);
    }
    fed_partition *none = NULL;
    fed_partition_destroy(&none); /* NULL-safe, both ways */
    fed_partition_destroy(NULL);
    CHECK(none == NULL);
    free(labels);
}

/* FNV-1a over offsets and index: a digest of a partition's bytes. */
static uint64_t digest(const fed_partition *p) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i <= p->clients; i++) h = (h ^ p->offsets[i]) * 1099511628211ULL;
    for (size_t i = 0; i < p->n; i++) h = (h ^ p->index[i]) * 1099511628211ULL;
    return h;
}

/* The bytes a seed gives are pinned. These digests came out the same from gcc 12 and
 * clang at -O0 to -O3 -march=native on x86-64, and even with -ffp-contract=fast forcing
 * FMAs into the Dirichlet's maths. A change here changes the partition of every seeded
 * simulation: make it on purpose only, and say so. */
TEST(seeded_bytes_are_pinned) {
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    for (size_t i = 0; i < N_BIG; i++) labels[i] = (int32_t)(i * 7919 % CLASSES);
    static const struct {
        const char *spec;
        uint64_t digest;
    } pinned[] = {
        {"iid", 0x23bfb870e54ec931ULL},
        {"dirichlet:0.5", 0x258b31ce0d40d38cULL},
        {"dirichlet:0.01", 0x2f78757b429d55d5ULL},
        {"dirichlet:1000", 0x44288eabf0da239cULL},
        {"shards:2", 0x2d833f23faa59ff9ULL},
        {"labels:3", 0x58583aa84d72da7dULL},
    };
    for (size_t k = 0; k < sizeof pinned / sizeof pinned[0]; k++) {
        fed_part_config c = config(FED_PART_IID, 50);
        c.min_size = 0;
        c.seed = 2024;
        CHECK_OK(fed_part_parse(pinned[k].spec, &c));
        fed_partition *p = NULL;
        CHECK_OK(fed_partition_make(&p, labels, N_BIG, CLASSES, &c));
        if (p) {
            if (digest(p) != pinned[k].digest)
                fprintf(stderr, "%s: digest 0x%016llx\n", pinned[k].spec,
                        (unsigned long long)digest(p));
            CHECK(digest(p) == pinned[k].digest);
        }
        fed_partition_destroy(&p);
    }
    free(labels);
}

/* ---- iid ----------------------------------------------------------------------------- */

TEST(iid_sizes_differ_by_at_most_one) {
    enum { n = 1003, clients = 10 };
    int32_t labels[n];
    balanced_labels(labels, n, 7);
    fed_part_config c = config(FED_PART_IID, clients);
    fed_partition *p = NULL;
    CHECK_OK(fed_partition_make(&p, labels, n, 7, &c));
    check_partition(p, n, clients);
    if (!p) return;
    /* 1003 = 10 * 100 + 3: three clients of 101, seven of 100. */
    size_t of101 = 0, of100 = 0;
    for (size_t k = 0; k < clients; k++) {
        if (size_of(p, k) == 101) of101++;
        if (size_of(p, k) == 100) of100++;
    }
    CHECK_SIZE(of101, 3);
    CHECK_SIZE(of100, 7);
    fed_partition_destroy(&p);

    /* As many clients as examples: one each. */
    c.clients = n;
    CHECK_OK(fed_partition_make(&p, labels, n, 7, &c));
    check_partition(p, n, n);
    bool ones = p != NULL;
    for (size_t k = 0; p && k < n; k++)
        if (size_of(p, k) != 1) ones = false;
    CHECK(ones);
    fed_partition_destroy(&p);
}

/* ---- dirichlet ----------------------------------------------------------------------- */

static double mean_entropy(const int32_t *labels, const fed_part_config *c, size_t *min_size) {
    fed_partition *p = NULL;
    fed_part_stats s = {0};
    CHECK_OK(fed_partition_make(&p, labels, N_BIG, CLASSES, c));
    if (!p) return (double)NAN;
    check_partition(p, N_BIG, c->clients);
    CHECK_OK(fed_partition_stats(p, labels, CLASSES, &s));
    *min_size = s.min_examples;
    fed_partition_destroy(&p);
    return s.mean_entropy;
}

TEST(dirichlet_skew_follows_alpha) {
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    balanced_labels(labels, N_BIG, CLASSES);
    const double max_h = log((double)CLASSES);
    size_t fewest;

    /* alpha 1000: every client's label histogram is nearly uniform. */
    fed_part_config c = config(FED_PART_DIRICHLET, 100);
    c.alpha = 1000.0;
    double h = mean_entropy(labels, &c, &fewest);
    CHECK(h >= 0.95 * max_h);
    CHECK(fewest >= c.min_size);

    /* alpha 0.05: most clients see one or two labels. 10 clients, so that min_size 10
     * (of about 600 each) is met within a few draws. */
    c = config(FED_PART_DIRICHLET, 10);
    c.alpha = 0.05;
    h = mean_entropy(labels, &c, &fewest);
    CHECK(h <= 0.5 * max_h);
    CHECK(fewest >= 10);

    /* min_size binds: alpha 0.1 over 20 clients leaves some with far fewer than 100 of
     * their 300 on average, unless redrawn. */
    c = config(FED_PART_DIRICHLET, 20);
    c.alpha = 0.1;
    c.min_size = 0;
    c.seed = 7;
    (void)mean_entropy(labels, &c, &fewest);
    CHECK(fewest < 100); /* without the floor, this seed's first draw breaks it */
    c.min_size = 100;
    (void)mean_entropy(labels, &c, &fewest);
    CHECK(fewest >= 100);

    /* Impossible on its face: 10 clients x 601 > 6000 examples. */
    fed_partition *p = NULL;
    c = config(FED_PART_DIRICHLET, 10);
    c.min_size = 601;
    CHECK_ERR(fed_partition_make(&p, labels, N_BIG, CLASSES, &c), FED_EINVAL);
    CHECK(p == NULL);
    CHECK_STR(fed_errmsg(), "partition dirichlet: min_size 601 for each of 10 clients needs "
                            "more than the 6000 examples");

    /* Possible only by a miracle: exactly 600 each at alpha 0.05. Gives up after 1000. */
    c.min_size = 600;
    c.alpha = 0.05;
    CHECK_ERR(fed_partition_make(&p, labels, N_BIG, CLASSES, &c), FED_EINVAL);
    CHECK(p == NULL);
    CHECK_STR(fed_errmsg(), "partition dirichlet: no draw of 1000 gave every client min_size "
                            "600 examples (alpha 0.05, 10 clients, 6000 examples); lower "
                            "min_size or raise alpha");

    /* Tiny alpha: variates far below the smallest double are still handled (in logs). */
    c = config(FED_PART_DIRICHLET, 10);
    c.alpha = 0.001;
    c.min_size = 0;
    h = mean_entropy(labels, &c, &fewest);
    CHECK(h <= 0.1 * max_h);
    free(labels);
}

/* ---- shards -------------------------------------------------------------------------- */

/* Checks that client c of a shards partition is exactly K whole shards of the stable
 * label sort (shard s = sorted positions [s*n/S, (s+1)*n/S)), and that its distinct labels
 * are at most K plus the number of its shards that straddle a label boundary: a shard no
 * longer than the smallest class holds one label, or two when it straddles. Returns the
 * number of straddling shards seen over all clients. */
static size_t check_shards(const fed_partition *p, const int32_t *labels, size_t n, size_t classes,
                           size_t k) {
    const size_t shards = p->clients * k;
    size_t *shard_of = malloc(n * sizeof *shard_of), *order = malloc(n * sizeof *order);
    size_t *start = calloc(classes + 1, sizeof *start), *hist = calloc(classes, sizeof *hist);
    bool *straddles = calloc(shards, sizeof *straddles);
    for (size_t i = 0; i < n; i++) start[labels[i] + 1]++;
    for (size_t l = 0; l < classes; l++) start[l + 1] += start[l];
    for (size_t i = 0; i < n; i++) order[start[labels[i]]++] = i;
    size_t straddling = 0;
    for (size_t s = 0; s < shards; s++) {
        size_t lo = s * n / shards, hi = (s + 1) * n / shards;
        for (size_t q = lo; q < hi; q++) shard_of[order[q]] = s;
        straddles[s] = labels[order[lo]] != labels[order[hi - 1]];
        straddling += straddles[s];
    }
    bool whole = true, bounded = true;
    size_t *have = calloc(shards, sizeof *have);
    for (size_t c = 0; c < p->clients; c++) {
        /* Its examples per shard must be all of those shards' examples, K shards. */
        size_t held = 0, extra = 0, got = 0;
        for (size_t q = p->offsets[c]; q < p->offsets[c + 1]; q++)
            if (have[shard_of[p->index[q]]]++ == 0) held++;
        for (size_t q = p->offsets[c]; q < p->offsets[c + 1]; q++) {
            size_t s = shard_of[p->index[q]];
            if (have[s] == 0) continue;
            if (have[s] != (s + 1) * n / shards - s * n / shards) whole = false;
            extra += straddles[s];
            got++;
            have[s] = 0;
        }
        if (held != k || got != k) whole = false;
        if (labels_of(p, c, labels, hist, classes) > k + extra) bounded = false;
    }
    CHECK(whole);
    CHECK(bounded);
    free(shard_of);
    free(order);
    free(start);
    free(hist);
    free(straddles);
    free(have);
    return straddling;
}

TEST(shards_are_whole_label_sorted_shards) {
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    size_t hist[CLASSES] = {0};
    balanced_labels(labels, N_BIG, CLASSES);
    /* FedAvg's layout scaled down: 100 clients x 2 shards of 30; 30 divides 600, so no
     * shard straddles two labels and every client has at most K = 2 labels. */
    fed_part_config c = config(FED_PART_SHARDS, 100);
    c.shards_per_client = 2;
    fed_partition *p = NULL;
    CHECK_OK(fed_partition_make(&p, labels, N_BIG, CLASSES, &c));
    check_partition(p, N_BIG, 100);
    if (p) {
        bool sixty = true, at_most_two = true;
        size_t two = 0;
        for (size_t k = 0; k < 100; k++) {
            if (size_of(p, k) != 2 * 30) sixty = false;
            size_t d = labels_of(p, k, labels, hist, CLASSES);
            if (d > 2) at_most_two = false;
            two += d == 2;
        }
        CHECK(sixty);
        CHECK(at_most_two);
        CHECK(two > 50); /* random pairs of shards: about 90% span two labels */
        CHECK_SIZE(check_shards(p, labels, N_BIG, CLASSES, 2), 0);
    }
    fed_partition_destroy(&p);

    /* Uneven classes (170, 330, 500) into 7 x 3 = 21 shards of 47 or 48: boundaries fall
     * inside shards, and a client may then have one more label per straddling shard. */
    enum { n = 1000 };
    int32_t uneven[n];
    size_t count[3] = {0};
    for (size_t i = 0; i < n; i++) { /* 7 i mod 1000 runs over 0..999: interleaved */
        size_t v = i * 7 % n;
        uneven[i] = v < 170 ? 0 : v < 500 ? 1 : 2;
        count[uneven[i]]++;
    }
    CHECK_SIZE(count[0], 170);
    CHECK_SIZE(count[1], 330);
    CHECK_SIZE(count[2], 500);
    c = config(FED_PART_SHARDS, 7);
    c.shards_per_client = 3;
    CHECK_OK(fed_partition_make(&p, uneven, n, 3, &c));
    check_partition(p, n, 7);
    if (p) {
        bool sized = true;
        for (size_t k = 0; k < 7; k++)
            if (size_of(p, k) < 3 * 47 || size_of(p, k) > 3 * 48) sized = false;
        CHECK(sized);
        /* Shards 3 (positions 142..189) and 10 (476..523) straddle 170 and 500. */
        CHECK_SIZE(check_shards(p, uneven, n, 3, 3), 2);
    }
    fed_partition_destroy(&p);
    free(labels);
}

/* ---- labels -------------------------------------------------------------------------- */

/* Every client has exactly k distinct labels; returns how many labels have a holder. */
static size_t check_labels(const fed_partition *p, const int32_t *labels, size_t classes,
                           size_t k) {
    size_t *hist = calloc(classes, sizeof *hist);
    bool *held = calloc(classes, sizeof *held);
    bool exact = true;
    for (size_t c = 0; c < p->clients; c++) {
        if (labels_of(p, c, labels, hist, classes) != k) exact = false;
        for (size_t q = p->offsets[c]; q < p->offsets[c + 1]; q++) held[labels[p->index[q]]] = 1;
    }
    CHECK(exact);
    size_t covered = 0;
    for (size_t l = 0; l < classes; l++) covered += held[l];
    free(hist);
    free(held);
    return covered;
}

TEST(labels_gives_exactly_k_labels) {
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    balanced_labels(labels, N_BIG, CLASSES);
    fed_partition *p = NULL;

    /* 100 clients x 2 labels over 10 labels: 20 holders per label, 30 examples each. */
    fed_part_config c = config(FED_PART_LABELS, 100);
    c.labels_per_client = 2;
    CHECK_OK(fed_partition_make(&p, labels, N_BIG, CLASSES, &c));
    check_partition(p, N_BIG, 100);
    if (p) {
        CHECK_SIZE(check_labels(p, labels, CLASSES, 2), CLASSES);
        bool sixty = true;
        for (size_t k = 0; k < 100; k++)
            if (size_of(p, k) != 60) sixty = false;
        CHECK(sixty);
    }
    fed_partition_destroy(&p);

    /* (clients, K, classes) where a client's K labels cross from one shuffle of the labels
     * into the next, K equal to the classes, and clients * K == classes exactly. */
    const size_t cases[][3] = {{7, 3, 10}, {9, 3, 4}, {13, 4, 5}, {5, 10, 10},
                               {5, 2, 10}, {1, 1, 1}, {3, 7, 7}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        size_t cl = cases[t][0], k = cases[t][1], classes = cases[t][2];
        balanced_labels(labels, N_BIG, classes);
        c = config(FED_PART_LABELS, cl);
        c.labels_per_client = k;
        c.seed = 100 + t;
        CHECK_OK(fed_partition_make(&p, labels, N_BIG, classes, &c));
        check_partition(p, N_BIG, cl);
        if (p) CHECK_SIZE(check_labels(p, labels, classes, k), classes);
        fed_partition_destroy(&p);
    }

    /* A class without examples is not dealt: 6 classes, label 5 absent, 3 x 2 slots
     * cover the 5 that occur. */
    for (size_t i = 0; i < N_BIG; i++) labels[i] = (int32_t)(i % 5);
    c = config(FED_PART_LABELS, 3);
    c.labels_per_client = 2;
    CHECK_OK(fed_partition_make(&p, labels, N_BIG, 6, &c));
    check_partition(p, N_BIG, 3);
    if (p) CHECK_SIZE(check_labels(p, labels, 6, 2), 5);
    fed_partition_destroy(&p);

    /* ... so K may not exceed the labels that occur, */
    c.labels_per_client = 6;
    CHECK_ERR(fed_partition_make(&p, labels, N_BIG, 6, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition labels: labels_per_client 6 but only 5 of the 6 classes "
                            "occur in the data");
    /* the slots must cover them, */
    c.clients = 2;
    c.labels_per_client = 2;
    CHECK_ERR(fed_partition_make(&p, labels, N_BIG, 6, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition labels: clients * labels_per_client = 2 * 2 = 4 cannot "
                            "hold the 5 labels that occur; every example needs a client");
    /* and a label needs an example for each holder. */
    int32_t few[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    c = config(FED_PART_LABELS, 4);
    c.labels_per_client = 2;
    CHECK_ERR(fed_partition_make(&p, few, 12, 2, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition labels: label 1 has 1 examples but 4 clients hold it; "
                            "lower clients or labels_per_client");
    CHECK(p == NULL);
    free(labels);
}

/* ---- parsing ------------------------------------------------------------------------- */

TEST(parse_valid_specs) {
    fed_part_config c = fed_part_default_config();
    CHECK_INT(c.kind, FED_PART_IID);
    CHECK_SIZE(c.clients, 100);
    CHECK(c.alpha == 0.5);
    CHECK_SIZE(c.min_size, 10);
    CHECK_SIZE(c.shards_per_client, 2);
    CHECK_SIZE(c.labels_per_client, 2);
    CHECK(c.seed == 1);

    c.clients = 37;
    CHECK_OK(fed_part_parse("dirichlet:0.25", &c));
    CHECK_INT(c.kind, FED_PART_DIRICHLET);
    CHECK(c.alpha == 0.25);
    CHECK_SIZE(c.clients, 37); /* other fields untouched */
    CHECK_OK(fed_part_parse("dirichlet:1e3", &c));
    CHECK(c.alpha == 1000.0);
    CHECK_OK(fed_part_parse("shards:3", &c));
    CHECK_INT(c.kind, FED_PART_SHARDS);
    CHECK_SIZE(c.shards_per_client, 3);
    CHECK(c.alpha == 1000.0);
    CHECK_OK(fed_part_parse("labels:5", &c));
    CHECK_INT(c.kind, FED_PART_LABELS);
    CHECK_SIZE(c.labels_per_client, 5);
    CHECK_SIZE(c.shards_per_client, 3);
    CHECK_OK(fed_part_parse("iid", &c));
    CHECK_INT(c.kind, FED_PART_IID);
}

TEST(parse_malformed_specs) {
    static const struct {
        const char *spec, *msg;
    } bad[] = {
        {"", "partition \"\": unknown kind \"\"; expected iid, dirichlet:ALPHA, shards:K or "
             "labels:K"},
        {"dirichlet", "partition \"dirichlet\": dirichlet needs an alpha, as in dirichlet:0.5"},
        {"dirichlet:", "partition \"dirichlet:\": alpha is missing, as in dirichlet:0.5"},
        {"dirichlet:-1", "partition \"dirichlet:-1\": alpha must be > 0"},
        {"dirichlet:0", "partition \"dirichlet:0\": alpha must be > 0"},
        {"dirichlet:abc", "partition \"dirichlet:abc\": alpha \"abc\" is not a number"},
        {"dirichlet:inf", "partition \"dirichlet:inf\": alpha \"inf\" is not a number"},
        {"dirichlet: 1", "partition \"dirichlet: 1\": alpha \" 1\" is not a number"},
        {"dirichlet:0.5x", "partition \"dirichlet:0.5x\": alpha \"0.5x\" is not a number"},
        {"dirichlet:1e999", "partition \"dirichlet:1e999\": alpha \"1e999\" is too large"},
        {"shards:0", "partition \"shards:0\": shards per client must be >= 1"},
        {"shards", "partition \"shards\": shards needs K, as in shards:2"},
        {"shards:", "partition \"shards:\": shards per client is missing"},
        {"shards:-2", "partition \"shards:-2\": shards per client \"-2\" is not a whole number"},
        {"shards:99999999999999999999999",
         "partition \"shards:99999999999999999999999\": shards per client is too large"},
        {"labels:x", "partition \"labels:x\": labels per client \"x\" is not a whole number"},
        {"labels:2.5", "partition \"labels:2.5\": labels per client \"2.5\" is not a whole "
                       "number"},
        {"bogus", "partition \"bogus\": unknown kind \"bogus\"; expected iid, dirichlet:ALPHA, "
                  "shards:K or labels:K"},
        {"IID", "partition \"IID\": unknown kind \"IID\"; expected iid, dirichlet:ALPHA, "
                "shards:K or labels:K"},
        {"iid:3", "partition \"iid:3\": iid takes no parameter"},
        {"iid:", "partition \"iid:\": iid takes no parameter"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fed_part_config c = fed_part_default_config(), before = c;
        CHECK_ERR(fed_part_parse(bad[i].spec, &c), FED_EINVAL);
        CHECK_STR(fed_errmsg(), bad[i].msg);
        CHECK_MEM(&c, &before, sizeof c); /* untouched on error */
    }
    fed_part_config c = fed_part_default_config();
    CHECK_ERR(fed_part_parse(NULL, &c), FED_EINVAL);
    /* A long spec is quoted, cut to 80 characters. */
    char lng[300];
    memset(lng, 'z', sizeof lng - 1);
    lng[sizeof lng - 1] = '\0';
    CHECK_ERR(fed_part_parse(lng, &c), FED_EINVAL);
    CHECK(strlen(fed_errmsg()) < 250);
}

/* ---- configuration errors ------------------------------------------------------------ */

TEST(make_rejects_bad_configurations) {
    int32_t labels[20];
    balanced_labels(labels, 20, 4);
    fed_partition *p = NULL;
    fed_part_config c = config(FED_PART_IID, 0);
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: clients is 0; need at least 1");
    CHECK(p == NULL);

    c.clients = 21;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: clients 21 exceeds the 20 examples");

    c.clients = 2;
    labels[13] = 4;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: labels[13] is 4, not in [0, 4)");
    labels[13] = -1;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: labels[13] is -1, not in [0, 4)");
    labels[13] = 1;

    CHECK_ERR(fed_partition_make(&p, labels, 20, 0, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: classes is 0; need at least 1");

    c = config(FED_PART_LABELS, 2);
    c.labels_per_client = 5;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition labels: labels_per_client 5 must be in 1..4 (classes)");
    c.labels_per_client = 0;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition labels: labels_per_client 0 must be in 1..4 (classes)");

    c = config(FED_PART_SHARDS, 7);
    c.shards_per_client = 3;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition shards: clients * shards_per_client = 7 * 3 shards "
                            "exceeds the 20 examples; shards would be empty");
    c.shards_per_client = 0;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition shards: shards_per_client is 0; need >= 1");
    c.shards_per_client = SIZE_MAX / 2; /* the product overflows */
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);

    c = config(FED_PART_DIRICHLET, 2);
    c.alpha = 0.0;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition dirichlet: alpha 0 must be finite and > 0");
    c.alpha = (double)NAN;
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, &c), FED_EINVAL);
    CHECK(p == NULL);

    c = config(FED_PART_IID, 2);
    CHECK_ERR(fed_partition_make(&p, NULL, 20, 4, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition: labels is NULL for 20 examples");
    CHECK_ERR(fed_partition_make(&p, labels, 20, 4, NULL), FED_EINVAL);
    CHECK(p == NULL);
}

/* ---- statistics ---------------------------------------------------------------------- */

TEST(stats_and_describe_by_hand) {
    /* Labels 0 0 1 1 1 2 (3 classes) dealt as {0, 2}, {1, 3, 4}, {5}:
     *   client 0: labels 0, 1     -> 2 labels, entropy ln 2
     *   client 1: labels 0, 1, 1  -> 2 labels, entropy -(1/3 ln 1/3 + 2/3 ln 2/3)
     *   client 2: label 2         -> 1 label,  entropy 0
     * sizes 2 3 1: min 1, lower median 2, max 3, mean 2. */
    const int32_t labels[6] = {0, 0, 1, 1, 1, 2};
    size_t offsets[4] = {0, 2, 5, 6};
    uint32_t index[6] = {0, 2, 1, 3, 4, 5};
    fed_partition p = {.clients = 3, .n = 6, .offsets = offsets, .index = index};
    fed_part_stats s;
    CHECK_OK(fed_partition_stats(&p, labels, 3, &s));
    const double h1 = -(log(1.0 / 3.0) / 3.0 + 2.0 * log(2.0 / 3.0) / 3.0);
    CHECK_SIZE(s.min_examples, 1);
    CHECK_SIZE(s.median_examples, 2);
    CHECK_SIZE(s.max_examples, 3);
    CHECK_NEAR(s.mean_examples, 2.0, 0.0);
    CHECK_SIZE(s.min_labels, 1);
    CHECK_SIZE(s.max_labels, 2);
    CHECK_NEAR(s.mean_labels, 5.0 / 3.0, 1e-15);
    CHECK_NEAR(h1, 0.6365141682948128, 1e-15);
    CHECK_NEAR(s.mean_entropy, (log(2.0) + h1) / 3.0, 1e-15);
    CHECK_NEAR(s.max_entropy, log(3.0), 0.0);
    char line[200];
    fed_partition_describe(&s, p.clients, line, sizeof line);
    CHECK_STR(line, "3 clients: examples per client min 1 median 2 max 3 (mean 2.0); labels per "
                    "client min 1 mean 1.7 max 2; label entropy 0.44 of 1.10 nats");
    /* Cut short, still terminated. */
    char tiny[10];
    fed_partition_describe(&s, p.clients, tiny, sizeof tiny);
    CHECK_STR(tiny, "3 clients");

    /* An empty client (entropy 0, 0 labels); sizes 0 2 3 1 -> lower median 1. */
    size_t offsets4[5] = {0, 0, 2, 5, 6};
    fed_partition q = {.clients = 4, .n = 6, .offsets = offsets4, .index = index};
    CHECK_OK(fed_partition_stats(&q, labels, 3, &s));
    CHECK_SIZE(s.min_examples, 0);
    CHECK_SIZE(s.median_examples, 1);
    CHECK_SIZE(s.min_labels, 0);
    CHECK_NEAR(s.mean_labels, 5.0 / 4.0, 1e-15);
    CHECK_NEAR(s.mean_entropy, (log(2.0) + h1) / 4.0, 1e-15);
    fed_partition_describe(&s, q.clients, line, sizeof line);
    CHECK_STR(line, "4 clients: examples per client min 0 median 1 max 3 (mean 1.5); labels per "
                    "client min 0 mean 1.2 max 2; label entropy 0.33 of 1.10 nats");

    /* One client holding everything. */
    size_t offsets1[2] = {0, 6};
    uint32_t sorted[6] = {0, 1, 2, 3, 4, 5};
    fed_partition one = {.clients = 1, .n = 6, .offsets = offsets1, .index = sorted};
    CHECK_OK(fed_partition_stats(&one, labels, 3, &s));
    fed_partition_describe(&s, one.clients, line, sizeof line);
    CHECK_STR(line, "1 client: examples per client min 6 median 6 max 6 (mean 6.0); labels per "
                    "client min 3 mean 3.0 max 3; label entropy 1.01 of 1.10 nats");

    /* A label out of range is named by its example. */
    const int32_t wrong[6] = {0, 0, 1, 7, 1, 2};
    CHECK_ERR(fed_partition_stats(&p, wrong, 3, &s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "partition stats: example 3 of client 1 has no label in [0, 3)");
}

TEST(stats_of_a_made_partition) {
    /* Shards with 100 clients x 2 whole one-label shards: exact sizes, 1 or 2 labels. */
    int32_t *labels = malloc(N_BIG * sizeof *labels);
    balanced_labels(labels, N_BIG, CLASSES);
    fed_part_config c = config(FED_PART_SHARDS, 100);
    fed_partition *p = NULL;
    fed_part_stats s;
    CHECK_OK(fed_partition_make(&p, labels, N_BIG, CLASSES, &c));
    if (p) {
        CHECK_OK(fed_partition_stats(p, labels, CLASSES, &s));
        CHECK_SIZE(s.min_examples, 60);
        CHECK_SIZE(s.median_examples, 60);
        CHECK_SIZE(s.max_examples, 60);
        CHECK_NEAR(s.mean_examples, 60.0, 0.0);
        CHECK(s.min_labels >= 1 && s.max_labels == 2);
        CHECK(s.mean_entropy <= log(2.0) + 1e-12);
    }
    fed_partition_destroy(&p);
    free(labels);
}

/* ---- scale and faults ---------------------------------------------------------------- */

TEST(ten_thousand_clients) {
    enum { n = 60000, clients = 10000 };
    int32_t *labels = malloc(n * sizeof *labels);
    balanced_labels(labels, n, CLASSES);
    const fed_part_kind kinds[] = {FED_PART_IID, FED_PART_DIRICHLET, FED_PART_SHARDS,
                                   FED_PART_LABELS};
    for (size_t k = 0; k < 4; k++) {
        fed_part_config c = config(kinds[k], clients);
        c.min_size = 0;
        fed_partition *p = NULL;
        CHECK_OK(fed_partition_make(&p, labels, n, CLASSES, &c));
        check_partition(p, n, clients);
        fed_partition_destroy(&p);
    }
    free(labels);
}

TEST(allocation_failures) {
    int32_t labels[200];
    balanced_labels(labels, 200, 5);
    const fed_part_kind kinds[] = {FED_PART_IID, FED_PART_DIRICHLET, FED_PART_SHARDS,
                                   FED_PART_LABELS};
    for (size_t k = 0; k < 4; k++) {
        fed_part_config c = config(kinds[k], 4);
        FOR_EACH_ALLOC_FAILURE(f) {
            fed_partition *p = NULL;
            ALLOC_TRY(f, fed_partition_make(&p, labels, 200, 5, &c));
            if (f.failed)
                CHECK(p == NULL);
            else
                check_partition(p, 200, 4);
            fed_partition_destroy(&p);
        }
    }
    int32_t six[6] = {0, 1, 2, 0, 1, 2};
    size_t offsets[2] = {0, 6};
    uint32_t index[6] = {0, 1, 2, 3, 4, 5};
    fed_partition one = {.clients = 1, .n = 6, .offsets = offsets, .index = index};
    fed_part_stats s;
    fed_alloc_fail_at(1);
    CHECK_ERR(fed_partition_stats(&one, six, 3, &s), FED_ENOMEM);
    fed_alloc_fail_at(0);
}

int main(void) {
    RUN(every_kind_assigns_each_example_once_and_is_seeded);
    RUN(seeded_bytes_are_pinned);
    RUN(iid_sizes_differ_by_at_most_one);
    RUN(dirichlet_skew_follows_alpha);
    RUN(shards_are_whole_label_sorted_shards);
    RUN(labels_gives_exactly_k_labels);
    RUN(parse_valid_specs);
    RUN(parse_malformed_specs);
    RUN(make_rejects_bad_configurations);
    RUN(stats_and_describe_by_hand);
    RUN(stats_of_a_made_partition);
    RUN(ten_thousand_clients);
    RUN(allocation_failures);
    return test_report();
}
