/* The federation simulator behind `fedtune sim`: the real coordinator (coordinator/)
 * and N virtual sites (client/) in one process, talking over inproc:// ZeroMQ through
 * the same channel (net/): plaintext by default, full TLS with `tls`. Nothing of the
 * round logic is re-implemented here; this file only wires the pieces and plays the
 * part of the sites' machines.
 *
 * Threads: the coordinator's engine runs on its own thread (fed_coord_step); one thread
 * steps every virtual site's connection (fed_site_step, which only moves messages: the
 * sites are made with external_training); a pool of `workers` threads trains the rounds
 * the sites receive, each with one fed_site_trainer (a model built once per
 * architecture). A virtual site is its slice of the data and a connection; it frees
 * the model buffers after each round (keep_model false), so memory grows with the
 * workers and the sampled sites, not with the federation.
 *
 * Reproducibility: the partition, the sample, the dropouts, the stragglers and every
 * site's training seed derive from `seed`; the coordinator receives updates one at a
 * time in site-name order (ordered_uploads), so the same seed gives the same final
 * model bytes whatever the threads' timing.
 *
 * Failures: `dropout` is the probability that a sampled site vanishes mid-round (it
 * trains, then drops its connection instead of sending, and reconnects for later
 * rounds); `stragglers` the probability that a sampled site starts training only after
 * `straggler_delay_s`. Both are drawn per (site, round) from the seed, so the
 * coordinator's deadline and min_fit logic is exercised reproducibly.
 *
 * Attacks: `malicious` is the share of the sites that attack (drawn once from the seed:
 * fed_sim_malicious says which), `attack` what they do. Model poisoning (sign flip,
 * scaling, noise, LIE with Z from fed_sim_lie_z) is the sites' "attack" stage
 * (client/site_pipeline.h), data poisoning (label flip, y -> C-1-y; backdoor, sim/attack.h:
 * triggered copies relabelled) is done here to the malicious sites' data when they are made. The
 * coordinator is not told who is malicious. With a backdoor and coord.eval_data, the coordinator's
 * metric hook reports "backdoor_success" each round: the new model's accuracy on the triggered test
 * examples of other labels relabelled to the target (also with malicious 0: the base
 * rate).
 *
 * Across processes (role, for `mpirun fedtune sim`: cli/sim_mpi.h): one process runs the
 * coordinator alone on a tcp:// endpoint (COORDINATOR), every other its share of the
 * sites (SITES: i % host_stride == host_index) connecting to it with TLS; each computes
 * the same partition, malicious sites and per-site seeds from the same configuration, so
 * with ordered uploads the final model is the one-process run's, byte for byte. */
#ifndef FED_SIM_SIM_H
#define FED_SIM_SIM_H

#include "client/client.h"
#include "coordinator/coordinator.h"
#include "dataset/dataset.h"
#include "core/err.h"
#include "core/model.h"
#include "sim/partition.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one process of a simulation runs. */
typedef enum fed_sim_role {
    FED_SIM_ALL = 0,     /* the coordinator and every site (one process) */
    FED_SIM_COORDINATOR, /* the coordinator only; the sites are other processes' */
    FED_SIM_SITES,       /* a share of the sites only (host_stride, host_index) */
} fed_sim_role;

typedef struct fed_sim_config {
    const fed_dataset *train;             /* pooled labeled data the partition splits (borrowed) */
    fed_part_config part;                 /* how (clients, kind, parameters; its seed is ignored) */
    const fed_partition *partition;       /* or this one, made by the caller (borrowed; its
                                             indices into train): part is then ignored */
    double client_test_split;             /* share of each site's data held out for federated
                                             evaluation, [0, 0.9] (0) */
    const char *const *site_names;        /* (sites) the sites' names (certificate CN, metrics), or
                                             NULL: site-001, ... (borrowed; names must be unique) */
    const fed_dataset *const *site_tests; /* (sites) a site's own federated-evaluation set
                                       instead of client_test_split of its share, or NULL
                                       (the array or an entry; borrowed) */
    fed_coord_config coord;               /* the round engine: model, eval_data, rounds, fraction,
                                             min_fit, deadline_ms, train, freeze, strategy, metrics,
                                             target_accuracy, out, on_round... min_clients, the
                                             server, ordered_uploads and the seed are set here */
    size_t workers;                       /* training threads, >= 1 */
    double dropout;                       /* P(a sampled site vanishes mid-round), [0, 1) */
    double stragglers;                    /* P(a sampled site starts late), [0, 1] */
    double straggler_delay_s;             /* how late, >= 0 */
    bool tls;                             /* full TLS in-process: certificates made into a temporary
                                             folder with certs_script */
    const char *certs_script;             /* certs/fedtune-certs (tls only) */
    uint64_t seed;                        /* everything random */
    double malicious;                     /* share of the sites that attack, [0, 0.5] (0) */
    fed_site_attack attack;               /* what they do (with malicious > 0); its seed is
                                             ignored (each site's derives from seed), a scale
                                             K of 0 is the number of sites sampled a round,
                                             a lie Z of NaN the paper's (fed_sim_lie_z) */
    bool keep_models;      /* sites keep the global model between rounds, as client daemons
                              do (a model a site), and take downlink deltas; false: lean */
    size_t no_codec_sites; /* the first this many sites lack the capability "codec" (sites
                              of an older version: plain f32 updates whatever --compress) */
    /* Called on the sites' thread with every update a site computed, just before it is
     * sent or, dropped true, lost with the site's vanishing connection: the site's
     * index, the round, its delta (n floats: the trainable tensors in manifest order)
     * and its weight. For studies of client drift and for tests; NULL: none. */
    void (*on_update)(void *user, size_t site, uint64_t round, const float *delta, size_t n,
                      uint64_t examples, bool dropped);
    void *on_update_user;
    /* Across processes (`mpirun fedtune sim`, cli/sim_mpi.c); all zero: one process. */
    fed_sim_role role;        /* what this process runs (FED_SIM_ALL) */
    const char *endpoint;     /* not ALL: the tcp:// endpoint the coordinator binds (port "*": a
                                 free one) or the sites connect to; needs tls */
    const char *cert_dir;     /* tls: the certificates made already there by fed_sim_make_certs
                                 (sim/certs.h; SITES needs only the CA's and its own sites'), or
                                 NULL: made here in a temporary folder (borrowed) */
    size_t host_stride;       /* SITES: this process hosts the sites i with */
    size_t host_index;        /*   i % host_stride == host_index */
    double connect_timeout_s; /* SITES: a site the coordinator has not welcomed this long
                                 after the start fails the run (0: waits for ever) */
    /* COORDINATOR: called on the calling thread once the coordinator listens, with the
     * endpoint it bound, before any site can connect; an error ends the run. */
    fed_err (*on_listen)(void *user, const char *endpoint);
    /* SITES: polled on the calling thread: has the coordinator's process ended its run?
     * (Its final Bye misses a site between sessions, a dropout reconnecting.) */
    bool (*coord_ended)(void *user);
    void *dist_user; /* for on_listen and coord_ended */
} fed_sim_config;

/* Defaults: IID over 100 sites, 1 worker, no dropout or stragglers, plaintext, seed 1,
 * coord = fed_coord_default_config() with min_fit 1 and deadline 600 s. */
fed_sim_config fed_sim_default_config(void);

typedef struct fed_sim_result {
    uint64_t rounds;             /* rounds completed */
    double seconds;              /* wall time of the rounds (set-up excluded) */
    uint64_t bytes;              /* bytes the coordinator sent and received */
    uint64_t dropped, straggled; /* simulated failures */
    uint8_t sha256[32];          /* of the final global parameters (not SITES) */
    size_t hosted;               /* the sites this process ran */
    uint64_t site_bytes;         /* payload bytes they received and sent (models, updates) */
    fed_coord_round_stats last;  /* of the last round */
    double setup_seconds;        /* partition, sites, connections */
} fed_sim_result;

/* The malicious sites of cfg's n sites (floor(malicious n) of them, drawn from the seed
 * alone): is_bad (n) set true for them. Returns their number. */
size_t fed_sim_malicious(const fed_sim_config *cfg, size_t n, bool *is_bad);

/* The Z of a LIE attack among n sites of which nbad are malicious: cfg->attack.param, or
 * when that is NaN the paper's (fed_site_lie_z) for the sites a round samples,
 * ceil(fraction n), with f = round(nbad x sampled / n), at least 1, of them malicious.
 * *sampled and *f (each may be NULL) receive those two. NaN when the paper's is undefined. */
double fed_sim_lie_z(const fed_sim_config *cfg, size_t n, size_t nbad, size_t *sampled, size_t *f);

/* The name of site i of n: cfg->site_names[i], else "site-007" (as many digits as n - 1
 * has, at least 3). */
void fed_sim_site_name(char out[64], const fed_sim_config *cfg, size_t n, size_t i);

/* Runs the simulation to its end (rounds or target accuracy). *final (if non-NULL)
 * receives a copy of the final global model. FED_EINVAL naming the field, data and
 * network errors as their layers report them. */
fed_err fed_sim_run(const fed_sim_config *cfg, fed_model **final, fed_sim_result *res) FED_MUST_USE;

#endif
