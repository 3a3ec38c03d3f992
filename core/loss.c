/* Loss functions; accumulation in double so the mean of a large batch stays exact
 * to float precision. */
#include "core/loss.h"

#include <assert.h>
#include <math.h>
#include <string.h>

double fed_softmax_ce(float *dlogits, const float *logits, const int32_t *labels, size_t N,
                      size_t C, float smoothing) {
    assert(smoothing >= 0.0f && smoothing < 1.0f);
    double total = 0.0;
    const double s = (double)smoothing, off = s / (double)C, on = 1.0 - s + off;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * C;
        assert(labels[n] >= 0 && (size_t)labels[n] < C);
        float mx = z[0];
        for (size_t c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (size_t c = 0; c < C; c++) sum += exp((double)(z[c] - mx));
        double logsum = log(sum) + (double)mx;
        /* loss = sum_c target_c * (logsum - z_c) */
        double loss = 0.0;
        for (size_t c = 0; c < C; c++) {
            double t = (size_t)labels[n] == c ? on : off;
            if (t != 0.0) loss += t * (logsum - (double)z[c]);
        }
        total += loss;
        if (dlogits) {
            float *d = dlogits + n * C;
            for (size_t c = 0; c < C; c++) {
                double p = exp((double)z[c] - logsum);
                double t = (size_t)labels[n] == c ? on : off;
                d[c] = (float)((p - t) / (double)N);
            }
        }
    }
    return total / (double)N;
}

double fed_bce_logits(float *dlogits, const float *logits, const float *targets, size_t n) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        double z = (double)logits[i], t = (double)targets[i];
        /* max(z, 0) - z*t + log(1 + exp(-|z|)) */
        total += (z > 0.0 ? z : 0.0) - z * t + log1p(exp(-fabs(z)));
        if (dlogits) {
            double sig = z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
            dlogits[i] = (float)((sig - t) / (double)n);
        }
    }
    return total / (double)n;
}

double fed_mse(float *dpred, const float *pred, const float *targets, size_t n) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)pred[i] - (double)targets[i];
        total += d * d;
        if (dpred) dpred[i] = (float)(2.0 * d / (double)n);
    }
    return total / (double)n;
}

/* The target of position t of a row of T ids, or -1 when it predicts nothing. */
static int32_t next_id(const float *row, size_t t, size_t T) {
    return t + 1 < T ? (int32_t)row[t + 1] : -1;
}

double fed_next_token_ce(float *dlogits, const float *logits, const float *ids, size_t N, size_t T,
                         size_t V, size_t *count, size_t *correct) {
    size_t n_pred = 0, hits = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t t = 0; t < T; t++) n_pred += next_id(ids + n * T, t, T) >= 0;
    double total = 0.0, inv = n_pred ? 1.0 / (double)n_pred : 0.0;
    for (size_t r = 0; r < N * T; r++) {
        const float *z = logits + r * V;
        float *d = dlogits ? dlogits + r * V : NULL;
        int32_t y = next_id(ids + (r / T) * T, r % T, T);
        if (y < 0) {
            if (d) memset(d, 0, V * sizeof(float));
            continue;
        }
        assert((size_t)y < V);
        /* Everything read of z comes before d (which may be z) is written. */
        size_t best = fed_argmax(z, V);
        float mx = z[best], zy = z[y];
        hits += (int32_t)best == y;
        double sum = 0.0;
        if (d) {
            for (size_t c = 0; c < V; c++) {
                float e = expf(z[c] - mx);
                d[c] = e;
                sum += (double)e;
            }
        } else {
            for (size_t c = 0; c < V; c++) sum += (double)expf(z[c] - mx);
        }
        total += log(sum) + (double)mx - (double)zy; /* logsumexp(z) - z_y */
        if (d) {
            float scale = (float)(inv / sum);
            for (size_t c = 0; c < V; c++) d[c] *= scale;
            d[y] -= (float)inv;
        }
    }
    *count = n_pred;
    *correct = hits;
    return total * inv;
}

size_t fed_argmax(const float *x, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

size_t fed_count_correct(const float *logits, const int32_t *labels, size_t N, size_t C) {
    size_t correct = 0;
    for (size_t n = 0; n < N; n++)
        if ((int32_t)fed_argmax(logits + n * C, C) == labels[n]) correct++;
    return correct;
}

const char *fed_loss_name(fed_loss_kind kind) {
    switch (kind) {
    case FED_LOSS_SOFTMAX_CE:
        return "ce";
    case FED_LOSS_BCE:
        return "bce";
    case FED_LOSS_MSE:
        return "mse";
    case FED_LOSS_NEXT_TOKEN:
        return "next-token";
    }
    return "?";
}
