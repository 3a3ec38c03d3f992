/* Data partitioners for federated simulation: given the class labels of one labeled data
 * set, deal its examples out to N virtual clients, IID or in one of the usual non-IID
 * ways (Dirichlet label skew, the FedAvg paper's label shards, K labels per client), and
 * describe how skewed the result is. Only example indices move: the caller gathers each
 * client's rows with fed_data_subset() or fed_data_gather() (dataset/dataset.h).
 *
 * Every example goes to exactly one client and each client's indices are ascending, so
 * a client's data keeps file order. A partition is a function of (labels, classes,
 * config): the same seed gives the same bytes on every machine. That is why only integer
 * RNG draws and IEEE-exact arithmetic (+ - * / sqrt, no libm log/exp/sin) decide anything;
 * the Dirichlet's gamma sampler (Marsaglia-Tsang) uses a polar-method normal and a
 * log/exp written in those operations, not fed_rng_normal(), whose Box-Muller calls libm.
 *
 * Memory is O(n + clients * classes) and so is time (the Dirichlet times its redraws).
 * Nothing here reads files or prints; the simulator and the CLI do that. */
#ifndef FED_SIM_PARTITION_H
#define FED_SIM_PARTITION_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum fed_part_kind {
    FED_PART_IID,       /* a seeded shuffle cut into equal parts (sizes differ by <= 1) */
    FED_PART_DIRICHLET, /* each label split across clients by proportions ~ Dir(alpha) */
    FED_PART_SHARDS,    /* sort by label, cut clients*K shards, K random shards per client */
    FED_PART_LABELS,    /* K distinct labels per client, each label split among its holders */
} fed_part_kind;

/* How to partition. Start from fed_part_default_config() and change what you need. */
typedef struct fed_part_config {
    fed_part_kind kind;       /* which partitioner */
    size_t clients;           /* clients to deal to, 1..n */
    double alpha;             /* dirichlet: concentration, finite and > 0 (0.1 severe skew,
                                 0.5 usual, 100 near IID) */
    size_t min_size;          /* dirichlet: each client gets at least this many examples;
                                 the draw is repeated until it holds, up to
                                 FED_PART_MAX_DRAWS times */
    size_t shards_per_client; /* shards: K >= 1, with clients * K <= n */
    size_t labels_per_client; /* labels: K in 1..classes */
    uint64_t seed;            /* everything random derives from this */
} fed_part_config;

/* Dirichlet draws tried before fed_partition_make gives up on min_size. */
#define FED_PART_MAX_DRAWS 1000

/* IID, 100 clients, alpha 0.5, min_size 10, K 2 (shards and labels), seed 1. */
fed_part_config fed_part_default_config(void);

/* Parses a partition spec as a user writes it: "iid", "dirichlet:ALPHA" ("dirichlet:0.5"),
 * "shards:K", "labels:K" (K a whole number >= 1; its upper bound depends on the data and
 * is checked by fed_partition_make). Sets cfg->kind and the kind's parameter (alpha,
 * shards_per_client or labels_per_client) and leaves every other field alone; on error cfg
 * is untouched. FED_EINVAL for anything else, with a detail quoting the spec and saying
 * what is wrong: `partition "dirichlet:-1": alpha must be > 0`. */
fed_err fed_part_parse(const char *spec, fed_part_config *cfg) FED_MUST_USE;

/* A partition: which examples each client holds. A plain value owned by whoever made it
 * with fed_partition_make; release it with fed_partition_destroy. */
typedef struct fed_partition {
    size_t clients;  /* number of clients */
    size_t n;        /* examples assigned: all of them */
    size_t *offsets; /* (clients + 1): client c holds index[offsets[c] .. offsets[c+1]) */
    uint32_t *index; /* (n) example indices, each exactly once, ascending per client */
} fed_partition;

/* Deals the n examples whose class ids are labels[0..n) (each in [0, classes)) to
 * cfg->clients clients as cfg says; *out receives a new partition owned by the caller
 * (NULL on error). labels is only read and not kept.
 *
 *  - IID: a shuffle of all examples cut into clients parts whose sizes differ by <= 1.
 *  - Dirichlet: for each label, its examples (shuffled) are cut across the clients by
 *    proportions ~ Dir(alpha, ..., alpha), one fresh draw per label; the whole draw is
 *    repeated until every client holds >= min_size examples. Clients may end up with
 *    zero examples when min_size is 0.
 *  - Shards (McMahan et al. 2017): examples sorted by label (stable: file order within a
 *    label), cut into S = clients * K contiguous shards whose sizes differ by <= 1 (all
 *    n / S when S divides n), and each client gets K shards chosen at random. A shard
 *    holds one label unless it straddles a label boundary.
 *  - Labels: only labels that occur in the data are dealt. Their order is shuffled, and
 *    client c takes positions c*K .. c*K+K-1 of a sequence of such shuffles laid end to
 *    end (each shuffle reordered at its start so no client gets a label twice), so every
 *    occurring label has a holder when clients * K >= the number of occurring labels and
 *    holder counts differ by at most one. Each label's examples are shuffled and cut
 *    evenly (sizes differ by <= 1) among its holders.
 *
 * Errors, all FED_EINVAL with a detail naming the field: clients 0 or above n; labels
 * NULL with n > 0; classes 0; n above UINT32_MAX; labels[i] out of range (names i); alpha
 * not finite and > 0; min_size * clients > n, or no draw of FED_PART_MAX_DRAWS meeting
 * min_size; shards_per_client 0 or clients * K > n; labels_per_client 0 or > classes, or
 * above the number of labels that occur, or clients * K below it (some examples would
 * have no client), or a label with fewer examples than holders (a client would miss one
 * of its K labels). FED_ENOMEM when memory runs out. */
fed_err fed_partition_make(fed_partition **out, const int32_t *labels, size_t n, size_t classes,
                           const fed_part_config *cfg) FED_MUST_USE;

/* NULL-safe; frees the partition and its arrays and sets *p to NULL. */
void fed_partition_destroy(fed_partition **p);

/* How skewed a partition is. */
typedef struct fed_part_stats {
    size_t min_examples;    /* fewest examples of a client */
    size_t median_examples; /* lower median: the ((clients - 1) / 2)-th smallest */
    size_t max_examples;    /* most examples of a client */
    double mean_examples;   /* n / clients */
    size_t min_labels;      /* fewest distinct labels of a client */
    size_t max_labels;      /* most distinct labels of a client */
    double mean_labels;     /* mean distinct labels per client */
    double mean_entropy;    /* mean over clients of the entropy of their label histogram,
                               in nats (0 for a client without examples) */
    double max_entropy;     /* log(classes): the entropy of a uniform label histogram */
} fed_part_stats;

/* Statistics of p over the labels it was made from (labels[i] for every index i in p,
 * each in [0, classes)). Fills *out. FED_EINVAL (naming the example) for an index not
 * below p->n or a label out of range, or for classes 0; FED_ENOMEM. Entropies use libm
 * and are for reading, not for bit-exact comparison. */
fed_err fed_partition_stats(const fed_partition *p, const int32_t *labels, size_t classes,
                            fed_part_stats *out) FED_MUST_USE;

/* One line for a log or a report, into out (at most len bytes, always NUL-terminated when
 * len > 0, truncated if too small), e.g. "100 clients: examples per client min 12 median
 * 598 max 1190 (mean 600.0); labels per client min 1 mean 2.0 max 2; label entropy 0.62
 * of 2.30 nats" ("1 client:" for one). */
void fed_partition_describe(const fed_part_stats *s, size_t clients, char *out, size_t len);

#endif
