/* Losses over a batch, each returning the mean loss and, when asked, the gradient of
 * that mean with respect to the network's output (so backward starts from it directly).
 * Reductions follow PyTorch's defaults ("mean"), so numbers compare one to one.
 * Labels and targets are validated by the caller (train.c): kernels only assert. */
#ifndef FED_LOSS_H
#define FED_LOSS_H

#include <stddef.h>
#include <stdint.h>

typedef enum fed_loss_kind {
    FED_LOSS_SOFTMAX_CE, /* multi-class: logits (N, C), integer labels in [0, C) */
    FED_LOSS_BCE,        /* multi-label/binary: logits (N, K), targets in [0, 1] */
    FED_LOSS_MSE,        /* regression: predictions (N, K), real targets */
    FED_LOSS_NEXT_TOKEN, /* language model: logits (N, T, V), targets the input ids shifted
                            by one (fed_next_token_ce) */
} fed_loss_kind;

/* Softmax cross-entropy with label smoothing s in [0, 1): the target distribution is
 * (1 - s) * onehot + s / C, as torch.nn.CrossEntropyLoss(label_smoothing=s).
 * dlogits (N, C), if not NULL, receives d(mean loss)/d(logits). */
double fed_softmax_ce(float *dlogits, const float *logits, const int32_t *labels, size_t N,
                      size_t C, float smoothing);
/* Binary cross-entropy on logits (numerically stable), mean over all N*K elements, as
 * torch.nn.BCEWithLogitsLoss. */
double fed_bce_logits(float *dlogits, const float *logits, const float *targets, size_t n);
/* Mean squared error over all n elements, as torch.nn.MSELoss. */
double fed_mse(float *dpred, const float *pred, const float *targets, size_t n);

/* Next-token cross-entropy of a language model: position t of example n predicts token
 * ids[n, t + 1]; positions whose next id is -1 (padding) or past the end predict nothing.
 * Returns the mean NLL over the predicting positions, exactly
 *   F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), ignore_index=-1)
 * and 0 when no position predicts (every sequence one token long). *count gets the
 * predicting positions, *correct those whose largest logit is the next id (ties: first
 * index). dlogits (N, T, V), if not NULL, receives d(mean loss)/d(logits), zero on the
 * other positions; it may be logits itself (the gradient overwrites the logits in place).
 * ids are padded token ids as floats (N, T), integers in [0, V) or -1 after the last id. */
double fed_next_token_ce(float *dlogits, const float *logits, const float *ids, size_t N, size_t T,
                         size_t V, size_t *count, size_t *correct);

/* Rows whose largest logit is at the label (ties: first index wins). */
size_t fed_count_correct(const float *logits, const int32_t *labels, size_t N, size_t C);
/* Index of the largest of x[0..n). */
size_t fed_argmax(const float *x, size_t n);

/* "ce", "bce", "mse", "next-token". */
const char *fed_loss_name(fed_loss_kind kind);

#endif
