/* What train, eval, tune and `data info` share: the data-file options, loading a data
 * file the way a model expects it (its class names, its standardisation), and the
 * metadata keys that carry both inside the model file. */
#ifndef FED_CLI_PREP_H
#define FED_CLI_PREP_H

#include "cli/options.h"
#include "coordinator/aggregate.h"
#include "dataset/dataset.h"
#include "dataset/text.h"
#include "dataset/text_lm.h"
#include "dataset/tokenizer.h"
#include "coordinator/coordinator.h"
#include "core/safetensors.h"
#include "core/train_spec.h"

/* Metadata keys of a trained model (next to fedtune.arch and fedtune.frozen). */
#define META_STANDARDIZE "fedtune.standardize" /* fed_std_to_json of the input transform */
#define META_CLASSES     "fedtune.classes"     /* JSON array of class names, id order */
#define META_TRAINING    "fedtune.training"    /* JSON summary of the run that made it */
#define META_TOKENIZER   "fedtune.tokenizer"   /* fed_tokenizer_to_json: the model reads text */

/* How a data file is read. */
typedef struct data_cfg {
    const char *format;  /* auto | csv | sklearn | idx */
    const char *label;   /* label column (CSV) */
    const char *header;  /* auto | yes | no */
    const char *missing; /* error | drop | mean */
    const char *labels;  /* IDX labels file (default: derived from the images file name) */
    const char *only;    /* keep only examples of these classes (ids or names), or NULL */
    /* Text data and class names: TEXT_OPTS (train, pretrain, tune, eval, data info). */
    const char *tokenizer; /* vocabulary file, over the model's fedtune.tokenizer */
    int drop_empty;        /* drop empty texts (counted) instead of failing */
    const char *classes;   /* class names in id order, comma-separated, or NULL */
    bool keep_bytes;       /* not an option: IDX images as a byte set (dataset.h) */
} data_cfg;

/* Option-table entries for a data_cfg at offset `base` of a command's config. */
/* clang-format off */
#define DATA_OPTS(base)                                                                    \
    {"format", OPT_CHOICE, "auto", 1, 0, "auto|csv|sklearn|idx",                           \
     (base) + offsetof(data_cfg, format), "data file format (auto: by content)"},          \
    {"label", OPT_STRING, NULL, 1, 0, NULL, (base) + offsetof(data_cfg, label),            \
     "CSV label column: header name or 0-based index, -1 = last [last]"},                  \
    {"header", OPT_CHOICE, "auto", 1, 0, "auto|yes|no", (base) + offsetof(data_cfg, header), \
     "CSV first row is a header"},                                                         \
    {"missing", OPT_CHOICE, "error", 1, 0, "error|drop|mean",                              \
     (base) + offsetof(data_cfg, missing),                                                 \
     "empty/NA feature cells: fail, drop the row, or use the column mean"},                \
    {"labels", OPT_STRING, NULL, 1, 0, NULL, (base) + offsetof(data_cfg, labels),          \
     "IDX labels file (default: the images file with images-idx3 -> labels-idx1)"},        \
    {"only-classes", OPT_LIST, NULL, 1, 0, NULL, (base) + offsetof(data_cfg, only),        \
     "keep only examples of these classes: ids or names, comma-separated (ids unchanged)"}
/* clang-format on */

/* Option-table entries for the text fields of a data_cfg at offset `base`. */
/* clang-format off */
#define TEXT_OPTS(base)                                                                    \
    {"tokenizer", OPT_STRING, NULL, 1, 0, NULL, (base) + offsetof(data_cfg, tokenizer),    \
     "text data (JSON lines, or CSV with text and label columns; or text for a language model): the tokenizer, "  \
     "USE-lite's vocab.json or fedtune's JSON (unigram or bpe) (default: the model's "     \
     META_TOKENIZER ")"},                                                                  \
    {"drop-empty", OPT_BOOL, "false", 1, 0, NULL, (base) + offsetof(data_cfg, drop_empty), \
     "text data: drop rows whose text is empty (counted) instead of failing"},             \
    {"classes", OPT_LIST, NULL, 1, 0, NULL, (base) + offsetof(data_cfg, classes),          \
     "class names in id order, comma-separated (default: the model's, else the labels "   \
     "sorted; integer labels are ids)"}
/* clang-format on */

/* The training options that `train`, `coordinator` and `sim` share, with the ranges every
 * site accepts (core/train_spec.h): a value one command takes, a site takes too. F is
 * the command's offsetof macro (its config has fields epochs, batch, optimizer, lr,
 * momentum, weight_decay, clip_norm); the defaults are the command's own. */
/* clang-format off */
#define TRAINING_OPTS(F, def_epochs, def_batch, def_optimizer, def_lr)                        \
    {"epochs", OPT_SIZE, def_epochs, 1, FED_TRAIN_EPOCHS_MAX, NULL, F(epochs),             \
     "passes over the (local) training data"},                                             \
    {"batch", OPT_SIZE, def_batch, 1, FED_TRAIN_BATCH_MAX, NULL, F(batch),                 \
     "examples per step"},                                                                 \
    {"optimizer", OPT_CHOICE, def_optimizer, 1, 0, FED_TRAIN_OPTIMIZERS, F(optimizer),     \
     "update rule"},                                                                       \
    {"lr", OPT_FLOAT_ABOVE, def_lr, 0, FED_TRAIN_LR_MAX, NULL, F(lr), "learning rate"},    \
    {"momentum", OPT_FLOAT, "0", 0, FED_TRAIN_MOMENTUM_MAX, NULL, F(momentum),             \
     "SGD momentum"},                                                                      \
    {"weight-decay", OPT_FLOAT, "0", 0, FED_TRAIN_WEIGHT_DECAY_MAX, NULL, F(weight_decay), \
     "weight decay (decoupled for adamw)"},                                                \
    {"clip-norm", OPT_FLOAT, "0", 0, FED_TRAIN_CLIP_NORM_MAX, NULL, F(clip_norm),          \
     "clip the gradient norm (0: off)"}
/* clang-format on */

/* LoRA as options (train, sim, coordinator): adapters, their scale and targets, and how a
 * federation averages them. */
typedef struct lora_cfg {
    size_t rank;             /* adapters' rank, 0 = off */
    double alpha;            /* their alpha (scale alpha / rank); 0 = the rank */
    const char *targets;     /* globs of the weights that get adapters, or NULL: the default */
    const char *aggregation; /* factors | frozen-a, or NULL (not given: factors) */
} lora_cfg;

/* Option-table entries for a lora_cfg at offset `base` of a command's config. */
/* clang-format off */
#define LORA_OPTS(base)                                                                    \
    {"lora-rank", OPT_SIZE, "0", 0, 1024, NULL, (base) + offsetof(lora_cfg, rank),         \
     "LoRA: add rank-R adapters and train only them (and a new head); 0 = off"},           \
    {"lora-alpha", OPT_FLOAT, "0", 0, 1e6, NULL, (base) + offsetof(lora_cfg, alpha),       \
     "LoRA scale numerator: updates are scaled by alpha / rank (0: alpha = rank)"},        \
    {"lora-targets", OPT_LIST, NULL, 1, 0, NULL, (base) + offsetof(lora_cfg, targets),     \
     "weights that get adapters, as tensor-name globs (\"*.qkv.weight\"); default: every " \
     "linear, 1x1 conv2d, attention and projection weight but the new head"},              \
    {"lora-aggregation", OPT_CHOICE, NULL, 1, 0, "factors|frozen-a",                       \
     (base) + offsetof(lora_cfg, aggregation),                                             \
     "LoRA in a federation: factors (FedIT: A and B trained and averaged separately) or "  \
     "frozen-a (FFA-LoRA: every *.lora_A stays as initialised, only B and a new head "     \
     "train, so the average of the products is exact) [factors]"}
/* clang-format on */

/* Applies the LoRA options to *m (replaced by the adapted copy): with rank, adapters on the
 * targets (a new head, when new_head, stays trainable whole; A drawn from seed); with
 * aggregation frozen-a, every *.lora_A frozen (also a model's own adapters). Prints one
 * line saying what was done. FED_EINVAL for --lora-alpha / --lora-targets without
 * --lora-rank, or --lora-aggregation without adapters. *keep_frozen (may be NULL) is true
 * when the model's trainable flags must reach the federation as they are (adapters). */
fed_err prep_lora(fed_model **m, const lora_cfg *lc, bool new_head, uint64_t seed,
                  bool *keep_frozen) FED_MUST_USE;

/* The server strategy as options: which one and its parameters. */
typedef struct strategy_cfg {
    const char *kind;              /* fedavg | fedavgm | fedadam | fedyogi */
    double eta, beta, b1, b2, tau; /* its parameters (eta 0: the strategy's default) */
} strategy_cfg;

/* Option-table entries for a strategy_cfg at offset `base` of a command's config. */
/* clang-format off */
#define STRATEGY_OPTS(base)                                                                \
    {"strategy", OPT_CHOICE, "fedavg", 1, 0, "fedavg|fedavgm|fedadam|fedyogi",             \
     (base) + offsetof(strategy_cfg, kind), "server strategy"},                            \
    {"eta", OPT_FLOAT, "0", 0, 100, NULL, (base) + offsetof(strategy_cfg, eta),            \
     "server learning rate (0: the strategy's default, 1 or 0.01)"},                       \
    {"beta", OPT_FLOAT, "0.9", 0, 0.9999, NULL, (base) + offsetof(strategy_cfg, beta),     \
     "FedAvgM server momentum"},                                                           \
    {"b1", OPT_FLOAT, "0.9", 0, 0.9999, NULL, (base) + offsetof(strategy_cfg, b1),         \
     "FedAdam/FedYogi first moment decay"},                                                \
    {"b2", OPT_FLOAT, "0.99", 0, 0.9999, NULL, (base) + offsetof(strategy_cfg, b2),        \
     "FedAdam/FedYogi second moment decay"},                                               \
    {"tau", OPT_FLOAT, "0.001", 1e-12, 10, NULL, (base) + offsetof(strategy_cfg, tau),     \
     "FedAdam/FedYogi adaptivity"}
/* clang-format on */

/* The strategy configuration the options describe. FED_EINVAL for an unknown kind. */
fed_err prep_strategy(const strategy_cfg *sc, fed_strategy_config *out) FED_MUST_USE;

/* Differential privacy as options: straight into fed_coord_config.dp (noise_seed is no
 * option: 0, or sim's seed-derived one). */
typedef fed_coord_dp_config dp_cfg;

/* clang-format off */
#define DP_OPTS(base)                                                                      \
    {"dp-clip", OPT_FLOAT, "0", 0, 1e30, NULL, (base) + offsetof(dp_cfg, clip),            \
     "differential privacy: clip every update to this L2 norm, weigh updates equally and " \
     "account epsilon (0: off)"},                                                          \
    {"dp-noise", OPT_FLOAT, "0", 0, 1e6, NULL, (base) + offsetof(dp_cfg, noise),           \
     "DP noise multiplier z: Gaussian noise of std z x dp-clip / updates on the mean"},    \
    {"dp-delta", OPT_FLOAT, "1e-5", 1e-300, 0.999999, NULL,                                \
     (base) + offsetof(dp_cfg, delta), "DP delta at which epsilon is reported"},          \
    {"target-epsilon", OPT_FLOAT, "0", 0, 1e6, NULL,                                       \
     (base) + offsetof(dp_cfg, target_epsilon),                                            \
     "stop before a round would spend more than this epsilon (0: off)"},                  \
    {"dp-target-quantile", OPT_FLOAT, "0", 0, 0.999, NULL,                                 \
     (base) + offsetof(dp_cfg, target_quantile),                                           \
     "adaptive clipping: move the bound toward this quantile of the update norms (0: off)"}, \
    {"dp-clip-lr", OPT_FLOAT, "0.2", 0, 10, NULL, (base) + offsetof(dp_cfg, clip_lr),      \
     "adaptive clipping: geometric learning rate of the bound"},                           \
    {"dp-count-noise", OPT_FLOAT, "0", 0, 1e6, NULL, (base) + offsetof(dp_cfg, count_noise), \
     "adaptive clipping: noise std on the count of unclipped updates (0: max(sampled/20, z))"}
/* clang-format on */

/* Secure aggregation as options (fed_coord_config's secagg* fields). */
typedef struct secagg_cfg {
    int on;
    size_t degree, threshold, quant;
    double clip;
    long phase_ms;
} secagg_cfg;

/* clang-format off */
#define SECAGG_OPTS(base)                                                                  \
    {"secagg", OPT_BOOL, "false", 1, 0, NULL, (base) + offsetof(secagg_cfg, on),           \
     "secure aggregation: the coordinator learns only the sum of the sampled updates"},    \
    {"secagg-degree", OPT_SIZE, "0", 0, 1023, NULL, (base) + offsetof(secagg_cfg, degree), \
     "secagg: neighbours per client (0: min(sampled - 1, 30); sampled - 1: all pairs)"},   \
    {"secagg-threshold", OPT_SIZE, "0", 0, 1024, NULL,                                     \
     (base) + offsetof(secagg_cfg, threshold),                                             \
     "secagg: shares that rebuild a secret, more than half of degree + 1 (0: the least)"}, \
    {"secagg-clip", OPT_FLOAT, "8", 1e-30, 1e30, NULL, (base) + offsetof(secagg_cfg, clip), \
     "secagg: each coordinate of an update is clipped to [-clip, clip]"},                  \
    {"secagg-quant", OPT_SIZE, "4194304", 1, 4294967295.0, NULL,                           \
     (base) + offsetof(secagg_cfg, quant),                                                 \
     "secagg: quantization levels of [-clip, clip] (sampled x this < 2^32)"},              \
    {"secagg-phase-ms", OPT_INT, "30000", 1, 86400000, NULL,                               \
     (base) + offsetof(secagg_cfg, phase_ms),                                              \
     "secagg: longest wait of each key-exchange phase, milliseconds"}
/* clang-format on */

/* Robust aggregation as options (fed_coord_config.robust). */
typedef struct robust_cfg {
    const char *rule; /* mean | median | trimmed-mean | krum | multi-krum | norm | rfa */
    size_t byzantine;
    double trim, norm_bound;
    const char *spill_dir;
} robust_cfg;

/* clang-format off */
#define ROBUST_OPTS(base)                                                                  \
    {"aggregation", OPT_CHOICE, "mean", 1, 0,                                              \
     "mean|median|trimmed-mean|krum|multi-krum|norm|rfa",                                  \
     (base) + offsetof(robust_cfg, rule),                                                  \
     "how updates combine: the weighted mean (FedAvg) or a Byzantine-robust rule"},        \
    {"byzantine", OPT_SIZE, "0", 0, 1e6, NULL, (base) + offsetof(robust_cfg, byzantine),   \
     "bad updates a round must withstand (median, trimmed-mean, rfa: min-fit > 2F; "      \
     "krum, multi-krum: min-fit > 2F + 2)"},                                               \
    {"trim", OPT_FLOAT, "0", 0, 0.4999, NULL, (base) + offsetof(robust_cfg, trim),         \
     "trimmed-mean: share of the updates cut at each end, per coordinate (0: --byzantine)"}, \
    {"norm-bound", OPT_FLOAT, "0", 0, 1e30, NULL, (base) + offsetof(robust_cfg, norm_bound), \
     "norm: clip every update to this L2 norm before the mean (0: the round's median "    \
     "norm)"},                                                                             \
    {"spill-dir", OPT_STRING, NULL, 1, 0, NULL, (base) + offsetof(robust_cfg, spill_dir),  \
     "folder of the robust rules' spill file of the round's updates (default: the "       \
     "checkpoint folder, else $TMPDIR or /tmp)"}
/* clang-format on */

/* What the coordinator does with updates, shared by coordinator and sim: the norm bound,
 * the robust rule and the codecs both ways. S(field) is the offset of a coord_shared_cfg
 * field in the command's config (COORD_SHARED_AT). */
/* clang-format off */
#define UPDATE_OPTS(S)                                                                     \
    {"max-update-norm", OPT_FLOAT, "0", 0, 1e30, NULL, S(max_update_norm),                 \
     "reject deltas with a larger L2 norm (0: off)"},                                      \
    ROBUST_OPTS(S(rb)),                                                                    \
    {"compress", OPT_STRING, "none", 1, 0, NULL, S(compress),                              \
     "uplink codec of the sites' updates: none, fp16, bf16, q8, q4 (stochastic, blocks of " \
     "256), topk:F (share F kept, with error feedback) or topk:F+fp16|bf16|q8|q4; sites "  \
     "without the capability send f32"},                                                   \
    {"compress-down", OPT_STRING, "none", 1, 0, NULL, S(compress_down),                    \
     "downlink codec: none, fp16, bf16, q8 or q4; each new version is committed as the "   \
     "last plus its change so encoded, and a site that keeps the last version (a client "  \
     "daemon, sim --keep-models) receives the change instead of the weights"}
/* clang-format on */

/* How rounds treat failed attempts and example counts (fed_coord_config's retry_*,
 * max_failed_attempts and max_examples_per_site), shared by coordinator and sim. */
typedef struct retry_cfg {
    size_t backoff_ms, backoff_max_ms, max_failed, max_examples;
} retry_cfg;

/* clang-format off */
#define RETRY_OPTS(base, def_backoff)                                                      \
    {"retry-backoff-ms", OPT_SIZE, def_backoff, 0, 86400000, NULL,                         \
     (base) + offsetof(retry_cfg, backoff_ms),                                             \
     "wait before retrying a failed attempt of a round, doubling with each failure"},      \
    {"retry-backoff-max-ms", OPT_SIZE, "60000", 0, 86400000, NULL,                         \
     (base) + offsetof(retry_cfg, backoff_max_ms), "longest wait between attempts"},       \
    {"max-failed-attempts", OPT_SIZE, "10", 0, 1000000, NULL,                              \
     (base) + offsetof(retry_cfg, max_failed),                                             \
     "stop the federation (exit 1) when this many attempts of a round in a row fail for "  \
     "the same reason (0: never)"},                                                        \
    {"max-examples-per-site", OPT_SIZE, "1000000000", 1, 9007199254740992.0, NULL,         \
     (base) + offsetof(retry_cfg, max_examples),                                           \
     "refuse an update claiming more examples (its FedAvg weight) than this, or than its "  \
     "site's Hello announced"}
/* clang-format on */

/* --input-stats: auto | on | off (fed_coord_config.input_stats). */
#define INPUT_STATS_OPT(field, def)                                                                \
    {                                                                                              \
        "input-stats", OPT_CHOICE, def, 1, 0, "auto|on|off", field,                                \
            "before round 1 of a model without an input standardisation, fit one from the sites' " \
            "summed statistics (secure sum with --secagg) and ship it to every site (auto: "       \
            "unless "                                                                              \
            "--dp-clip)"                                                                           \
    }

/* What `coordinator` and `sim` both map onto fed_coord_config, and map the same way.
 * Each command's config embeds one; its option entries stay in the command's own table
 * (its order, its defaults, its --help), pointing into the embedded struct with
 * COORD_SHARED_AT. What the two map differently (the training seed, min-fit, the
 * sampling seed) each command sets itself. */
typedef struct coord_shared_cfg {
    size_t rounds, deadline_ms;                   /* round engine */
    double fraction;                              /* share of sites sampled per round */
    size_t epochs, batch, max_steps;              /* site training */
    const char *optimizer;                        /* sgd|adam|adamw */
    double lr, momentum, weight_decay, clip_norm; /* site optimizer */
    const char *freeze;                           /* frozen tensor globs */
    strategy_cfg sc;                              /* server strategy */
    dp_cfg dp;                                    /* differential privacy */
    secagg_cfg sa;                                /* secure aggregation */
    double max_update_norm;                       /* reject larger deltas (0: off) */
    robust_cfg rb;                                /* robust aggregation */
    const char *compress;                         /* uplink codec (core/codec.h names) */
    const char *compress_down;                    /* downlink codec (dense) */
    retry_cfg rc;                                 /* failed attempts, example counts */
    const char *input_stats;                      /* auto | on | off */
    const char *metrics;                          /* JSON-lines metrics file */
    double target_accuracy;                       /* stop at this central accuracy */
    const char *out;                              /* final model */
} coord_shared_cfg;

/* Offset of field of the coord_shared_cfg at member `member` of config type `type`, for
 * option tables (a function-like F for TRAINING_OPTS is written with it). */
#define COORD_SHARED_AT(type, member, field)                                                       \
    (offsetof(type, member) + offsetof(coord_shared_cfg, field))

/* Copies the shared options into cc: rounds, fraction, deadline, the training
 * configuration but its seed, freeze, strategy, DP, secagg, max-update-norm, the robust
 * rule, compress, retries, input statistics, metrics, target accuracy and out. FED_EINVAL
 * for an unknown strategy, rule or codec, or a codec with --secagg. */
fed_err prep_coord_shared(const coord_shared_cfg *s, fed_coord_config *cc) FED_MUST_USE;

/* Loads path as dc says. classes (may be NULL) is the JSON array of class names a model
 * was trained with, so string labels get the same ids. Numeric data only: commands that
 * take text use prep_load_data. */
fed_err prep_load(fed_dataset **out, const char *path, const data_cfg *dc,
                  const char *classes) FED_MUST_USE;

/* What reading text data takes besides the options: the tokenizer and the sequence
 * length, and what the last text file gave. */
typedef struct prep_text {
    fed_tokenizer *tok;   /* from --tokenizer, else the model's META_TOKENIZER; NULL: none */
    bool from_option;     /* tok came from --tokenizer (a trained model should carry it) */
    size_t len;           /* T: the model's input length (its input must be one-dimensional) */
    bool loaded;          /* the last prep_load_data read text */
    fed_text_stats stats; /* and what it saw */
    bool lm_model;        /* the model is a language model (fed_arch_is_lm): prep_load_data
                             cuts text files (JSON lines, CSV text, *.txt) into windows of
                             ids (prep_load_lm); numeric files are ids already */
    bool lm;              /* the last load was prep_load_lm's */
    fed_text_lm_stats lm_stats; /* and what it saw */
} prep_text;

/* Fills *pt: the tokenizer of --tokenizer or of meta (either may be absent), len, the
 * model's input length, and whether it is a language model (m may be NULL: then len and
 * lm_model are the caller's). */
fed_err prep_text_open(prep_text *pt, const data_cfg *dc, const fed_meta *meta,
                       const fed_model *m) FED_MUST_USE;
void prep_text_close(prep_text *pt);
/* A name ending in .txt or .txt.gz: plain text (a language model's document). */
bool prep_is_plain_text(const char *path);
/* SHA-256 of t's canonical JSON (fed_tokenizer_to_json): what names a tokenizer between a
 * coordinator and its sites (the manifest's tokenizer_sha256). Only FED_ENOMEM. */
fed_err prep_tokenizer_sha(const fed_tokenizer *t, uint8_t out[32]) FED_MUST_USE;

/* prep_load, and text: a file fed_text_sniff calls text (.jsonl, or CSV whose header has
 * a "text" column) is tokenized with pt (an error without a tokenizer, and --tokenizer
 * with data that is not text is one too). --classes, if given, must agree with classes. */
fed_err prep_load_data(fed_dataset **out, const char *path, const data_cfg *dc, const char *classes,
                       prep_text *pt) FED_MUST_USE;

/* Language-model data: the comma-separated text files of list cut into windows of
 * pt->len ids with pt's tokenizer (text_lm.h), one data set. */
fed_err prep_load_lm(fed_dataset **out, const char *list, prep_text *pt) FED_MUST_USE;

/* Text data (named data) just loaded: token ids are neither standardised (a model with
 * META_STANDARDIZE in meta is refused) nor augmented (augment: an error); prints what the
 * load saw (command names the line) and, when the tokenizer came from --tokenizer, puts
 * it into meta as META_TOKENIZER. */
fed_err prep_text_report(const prep_text *pt, fed_meta *meta, const char *command, const char *data,
                         bool augment) FED_MUST_USE;

/* Loads a model file. Without arch the file must be self-describing (fedtune.arch in
 * its metadata); with arch (preset, JSON or @FILE) the architecture comes from the
 * spec and the file only supplies weights by tensor name, as in a file exported from
 * PyTorch. allow_extra ignores file tensors the model lacks (e.g. BatchNorm buffers).
 * *meta receives a copy of the file's metadata. */
fed_err prep_load_model(fed_model **m, fed_meta **meta, const char *path, const char *arch,
                        bool allow_extra) FED_MUST_USE;

/* Applies the model's META_STANDARDIZE transform (if its metadata has one) to d. */
fed_err prep_apply_meta_std(const fed_meta *meta, fed_dataset *d) FED_MUST_USE;

/* Class names of d as a JSON array (NULL in *json when d has integer labels). */
fed_err prep_classes_json(const fed_dataset *d, char **json) FED_MUST_USE;

#endif
