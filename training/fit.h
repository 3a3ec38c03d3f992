/* The supervised training loop and honest evaluation, shared by `fedtune train` and by
 * every federated client (a client's local round is one fed_fit call on its own data).
 *
 * fed_fit runs epochs of shuffled mini-batches (optionally augmented) through
 * fed_train_step with a learning-rate schedule, evaluates the validation set after each
 * epoch, and stops early when the validation loss has not improved by min_delta for
 * `patience` epochs, restoring the best epoch's weights. Everything random (order,
 * dropout, augmentation) derives from one seed: same seed and data, same bits.
 *
 * fed_evaluate computes loss, accuracy, the confusion matrix, per-class precision,
 * recall and F1, and macro-F1 (the unweighted mean over classes that occur in the
 * labels or the predictions, as scikit-learn's f1_score(average="macro")).
 *
 * fed_train_spec_fit turns a federated round's training spec (core/train_spec.h) into
 * the fed_fit configuration a site trains it with.
 *
 * This is the training layer: it depends on the model, the optimizer and the step of
 * core/ and on the data sets of dataset/, and neither of those depends on it. */
#ifndef FED_FIT_H
#define FED_FIT_H

#include "core/arena.h"
#include "dataset/dataset.h"
#include "core/err.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/train.h"
#include "core/train_spec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What one epoch measured; val_* are NaN without a validation set. */
typedef struct fed_epoch_stats {
    size_t epoch;          /* 1-based */
    size_t epochs;         /* planned */
    double train_loss;     /* mean over the epoch's predictions (examples, or a language
                              model's predicted tokens) */
    double train_acc;      /* running accuracy over them (dropout on) */
    size_t predictions;    /* how many: examples, or tokens (fed_step_stats.count) */
    double val_loss;       /* after the epoch, eval mode */
    double val_acc;        /* after the epoch, eval mode */
    double lr;             /* learning rate of the epoch's last step */
    double seconds;        /* wall time of the training part */
    double examples_per_s; /* training examples per second */
    bool best;             /* the validation loss improved on every earlier epoch */
} fed_epoch_stats;

typedef struct fed_fit_config {
    size_t epochs;          /* >= 1 */
    size_t batch;           /* >= 1; the last batch of an epoch may be smaller */
    fed_optim_config optim; /* update rule and its hyperparameters */
    fed_schedule schedule;  /* per step; total/step_size of 0 are filled from epochs */
    fed_loss_config loss;   /* FED_LOSS_SOFTMAX_CE for data sets with class ids; fed_fit
                               trains with the kind fed_loss_for_model picks (a language
                               model: the next-token loss, its labels ignored) */
    size_t patience;        /* early stopping after this many epochs without a better
                               validation loss; 0 = never (needs a validation set) */
    double min_delta;       /* improvement that counts, >= 0 */
    bool restore_best;      /* with a validation set: end with the best epoch's weights */
    fed_augment augment;    /* applied to training batches only */
    uint64_t seed;          /* order, dropout and augmentation */
    size_t eval_batch;      /* batch for validation passes (0: 256) */
    size_t max_steps;       /* stop after this many steps in all (0 = no limit) */
    double stop_at;         /* CLOCK_MONOTONIC seconds after which no step starts (0: no
                               limit): a federated round's deadline. The epoch in progress
                               ends there (its stats cover the steps done) */
    /* Called after every epoch (may be NULL). Returning false stops training. */
    bool (*on_epoch)(void *user, const fed_epoch_stats *s);
    /* Called after every step with steps done and planned in this epoch (may be NULL). */
    void (*on_step)(void *user, size_t done, size_t total);
    void *user;
} fed_fit_config;

/* A schedule for fed_fit: kind at base rate lr, with total and step_size 0 so that
 * fed_fit derives them from the epochs (cosine over all steps; step decay by gamma 0.1
 * every third of the epochs). */
fed_schedule fed_fit_schedule(fed_sched_kind kind, float lr);

/* Defaults: 10 epochs, batch 32, Adam at lr 1e-3 constant, softmax CE, no early
 * stopping, restore_best on, seed 1. */
fed_fit_config fed_fit_defaults(void);

typedef struct fed_fit_result {
    size_t epochs_run;       /* epochs completed */
    size_t steps;            /* optimizer steps taken */
    size_t best_epoch;       /* epoch with the lowest validation loss (0: no validation) */
    double best_val_loss;    /* its loss (NaN: no validation) */
    bool stopped_early;      /* patience ran out */
    bool out_of_time;        /* stop_at came before the planned steps were done */
    size_t examples;         /* training examples stepped over in all (with repeats) */
    double final_train_loss; /* train loss of the last epoch */
    double seconds;          /* wall time of the whole fit */
} fed_fit_result;

/* Trains m on train, validating on val (may be NULL). The optimizer is made here for
 * the tensors trainable now. FED_ESHAPE when the data's feature count differs from the
 * model's input size or it has more classes than the model has outputs; FED_EINVAL for
 * a bad configuration (field named). On error m holds the weights of the last completed
 * step (restored to the best epoch when that was asked for and one exists). */
fed_err fed_fit(fed_model *m, const fed_dataset *train, const fed_dataset *val,
                const fed_fit_config *c, fed_fit_result *r) FED_MUST_USE;

/* Of a language model (fed_arch_is_lm) only n, predictions, loss, accuracy and perplexity
 * are filled: its loss and accuracy are over the predicted tokens, and it has no classes
 * (num_classes 0, the arrays NULL). */
typedef struct fed_eval_result {
    size_t n;           /* examples */
    size_t predictions; /* what loss and accuracy average over: n, or predicted tokens */
    size_t num_classes; /* K: the model's outputs */
    double loss;        /* mean loss */
    double accuracy;    /* fraction correct */
    double perplexity;  /* language model: exp(loss), per token; NaN otherwise */
    double macro_f1;    /* mean F1 over classes present in labels or predictions */
    size_t *confusion;  /* (K, K): row = true class, column = predicted */
    double *precision;  /* (K) 0 where nothing was predicted as the class */
    double *recall;     /* (K) 0 where the class does not occur */
    double *f1;         /* (K) */
    size_t *support;    /* (K) examples of each true class */
} fed_eval_result;

/* Evaluates m on d (eval mode, batches of `batch`, 0: 256) with softmax cross-entropy
 * (label_smoothing of loss applies to the loss value only), or a language model with the
 * next-token loss (fed_loss_for_model; its labels ignored, smoothing refused). */
fed_err fed_evaluate(fed_model *m, const fed_dataset *d, size_t batch, const fed_loss_config *loss,
                     fed_eval_result *r) FED_MUST_USE;
/* fed_evaluate on `threads` threads (0 or 1: the calling thread alone): a classifier's
 * batches are taken in turn by the calling thread, on m, and the others, each on a copy of
 * m; the result is the same to the last bit for any number of threads (every batch's loss
 * is summed in batch order). A language model is evaluated on the calling thread. Use it
 * where BLAS runs on one thread (the simulator); with threaded BLAS the GEMMs are
 * parallel already. */
fed_err fed_evaluate_threads(fed_model *m, const fed_dataset *d, size_t batch,
                             const fed_loss_config *loss, size_t threads,
                             fed_eval_result *r) FED_MUST_USE;
void fed_eval_result_free(fed_eval_result *r);
/* fed_evaluate with the model's loss (softmax cross-entropy; a language model's next-token
 * loss, per token), keeping only the mean loss and the accuracy: what the coordinator, the
 * sites and sim report of a global model. */
fed_err fed_evaluate_ce(fed_model *m, const fed_dataset *d, size_t batch, double *loss,
                        double *accuracy) FED_MUST_USE;
fed_err fed_evaluate_ce_threads(fed_model *m, const fed_dataset *d, size_t batch, size_t threads,
                                double *loss, double *accuracy) FED_MUST_USE;

/* The fed_fit configuration of round `round` of s, exactly as a site trains it (after
 * fed_train_spec_check):
 *   optimizer: s->optimizer with PyTorch's defaults (fed_optim_defaults), then momentum
 *              (sgd only), weight_decay and clip_norm from s;
 *   schedule:  constant at s->lr;
 *   epochs:    s->epochs capped by max_epochs (0: no cap); batch likewise by max_batch;
 *   seed:      s->seed + round (wrapping); max_steps: s->max_steps;
 *   softmax cross-entropy, no label smoothing, no augmentation, no early stopping,
 *   restore_best off, no callbacks. */
fed_err fed_train_spec_fit(const fed_train_spec *s, uint64_t round, size_t max_epochs,
                           size_t max_batch, fed_fit_config *out) FED_MUST_USE;

#endif
