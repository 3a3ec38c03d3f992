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

/* Rows whose largest logit is at the label (ties: first index wins). */
size_t fed_count_correct(const float *logits, const int32_t *labels, size_t N, size_t C);
/* Index of the largest of x[0..n). */
size_t fed_argmax(const float *x, size_t n);

/* "ce", "bce", "mse". */
const char *fed_loss_name(fed_loss_kind kind);

#endif
