/* fed_fit and fed_evaluate: the epoch loop and the metrics; fed_train_spec_fit: a
 * round's training spec as a fit configuration (see fit.h). */
#include "training/fit.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/loss.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define DEFAULT_EVAL_BATCH 256

/* Streams of the fit seed, one per use, so adding augmentation does not change the order. */
enum { STREAM_ORDER = 1, STREAM_DROPOUT = 2, STREAM_AUGMENT = 3 };

fed_schedule fed_fit_schedule(fed_sched_kind kind, float lr) {
    fed_schedule s = fed_schedule_constant(lr);
    s.kind = kind;
    s.total = 0;
    s.step_size = 0;
    s.gamma = 0.1f;
    return s;
}

fed_fit_config fed_fit_defaults(void) {
    fed_fit_config c;
    memset(&c, 0, sizeof c);
    c.epochs = 10;
    c.batch = 32;
    c.optim = fed_optim_defaults(FED_OPT_ADAM);
    c.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, 1e-3f);
    c.loss.kind = FED_LOSS_SOFTMAX_CE;
    c.restore_best = true;
    c.seed = 1;
    return c;
}

/* The data set fits the model: same feature count, no class beyond the outputs. */
static fed_err check_data(const fed_model *m, const fed_dataset *d, const char *what) {
    size_t in = fed_model_input_size(m), out = fed_model_output_size(m);
    if (d->dim != in)
        return fed_errorf(FED_ESHAPE, "%s data has %zu features per example; the model takes %zu",
                          what, d->dim, in);
    if (d->num_classes > out)
        return fed_errorf(FED_ESHAPE,
                          "%s data has %zu classes; the model has %zu outputs (use a new head)",
                          what, d->num_classes, out);
    return FED_OK;
}

static fed_err check_config(const fed_fit_config *c, const fed_dataset *train,
                            const fed_dataset *val) {
    if (c->epochs == 0) return fed_errorf(FED_EINVAL, "epochs: must be at least 1");
    if (c->batch == 0) return fed_errorf(FED_EINVAL, "batch: must be at least 1");
    if (c->loss.kind != FED_LOSS_SOFTMAX_CE)
        return fed_errorf(FED_EINVAL, "loss: labeled data sets train with softmax cross-entropy");
    if (!(c->min_delta >= 0.0)) return fed_errorf(FED_EINVAL, "min-delta: must be >= 0");
    if (c->patience && (!val || val->n == 0))
        return fed_errorf(FED_EINVAL, "patience: early stopping needs a validation set");
    if (train->n == 0) return fed_errorf(FED_EINVAL, "the training set is empty");
    const fed_augment *a = &c->augment;
    if (!(a->noise_std >= 0.0f) || !isfinite(a->noise_std))
        return fed_errorf(FED_EINVAL, "noise: must be a finite value >= 0");
    if ((a->shift || a->hflip) && train->shape.ndim != 3)
        return fed_errorf(FED_EINVAL,
                          "shift and flip augment images; this data is a table of "
                          "%zu features",
                          train->dim);
    if (a->shift && (a->shift >= train->shape.d[1] || a->shift >= train->shape.d[2]))
        return fed_errorf(FED_EINVAL, "shift %zu: must be smaller than the image (%zux%zu)",
                          a->shift, train->shape.d[1], train->shape.d[2]);
    return fed_optim_config_check(&c->optim);
}

/* Rows s .. s + nb of d as one block: a view of d->x, or converted into *buf (allocated
 * for batch rows on first use) for a byte set. NULL when memory ran out. */
static const float *rows_at(const fed_dataset *d, size_t s, size_t nb, size_t batch, float **buf) {
    if (d->x) return d->x + s * d->dim;
    size_t most = batch < d->n ? batch : d->n;
    if (!*buf && !(*buf = fed_mallocarray(most * d->dim, sizeof(float)))) return NULL;
    for (size_t i = 0; i < nb; i++) fed_data_row(d, s + i, *buf + i * d->dim);
    return *buf;
}

/* Mean loss and accuracy of m on d (rows are contiguous, so batches are views), over
 * its predictions: examples, or a language model's predicted tokens. */
static fed_err val_pass(fed_model *m, fed_arena *a, const fed_dataset *d, size_t batch,
                        const fed_loss_config *loss, double *mean_loss, double *acc) {
    double total = 0.0;
    size_t correct = 0, count = 0;
    float *buf = NULL;
    fed_err err = FED_OK;
    for (size_t s = 0; s < d->n && !err; s += batch) {
        size_t nb = d->n - s < batch ? d->n - s : batch;
        fed_batch b = {rows_at(d, s, nb, batch, &buf), d->y + s, NULL, nb};
        fed_step_stats st;
        if (!b.x) err = FED_ENOMEM;
        if (err || (err = fed_eval_batch(m, a, &b, loss, &st))) break;
        total += st.loss * (double)st.count;
        correct += st.correct;
        count += st.count;
    }
    fed_free(buf);
    if (err) return err;
    *mean_loss = count ? total / (double)count : 0.0;
    *acc = count ? (double)correct / (double)count : 0.0;
    return FED_OK;
}

/* The loss m trains with: the configuration's, of the kind the model needs. */
static fed_loss_config loss_for(const fed_model *m, const fed_loss_config *c) {
    fed_loss_config l = *c;
    l.kind = fed_loss_for_model(m);
    return l;
}

fed_err fed_fit(fed_model *m, const fed_dataset *train, const fed_dataset *val,
                const fed_fit_config *c, fed_fit_result *r) {
    const double t_fit = fed_now_s();
    memset(r, 0, sizeof *r);
    r->best_val_loss = (double)NAN;
    r->final_train_loss = (double)NAN;
    fed_err err;
    if ((err = check_config(c, train, val))) return err;
    if ((err = check_data(m, train, "training"))) return err;
    if (val && val->n && (err = check_data(m, val, "validation"))) return err;
    const bool validate = val && val->n > 0;

    const size_t n = train->n, dim = train->dim;
    const size_t batch = c->batch < n ? c->batch : n;
    const size_t steps_per_epoch = (n + batch - 1) / batch;
    const size_t eval_batch = c->eval_batch ? c->eval_batch : DEFAULT_EVAL_BATCH;

    fed_schedule sched = c->schedule;
    size_t planned = c->epochs * steps_per_epoch; /* epochs, batch bounded: no overflow */
    if (c->max_steps && c->max_steps < planned) planned = c->max_steps;
    if (sched.total == 0) sched.total = planned > sched.warmup ? planned - sched.warmup : 1;
    if (sched.step_size == 0)
        sched.step_size = steps_per_epoch * (c->epochs / 3 ? c->epochs / 3 : 1);
    if (sched.kind == FED_SCHED_STEP && sched.gamma == 0.0f) sched.gamma = 0.1f;
    if ((err = fed_schedule_check(&sched))) return err;

    fed_optim *o = NULL;
    fed_arena *arena = NULL;
    size_t *order = fed_mallocarray(n, sizeof *order);
    float *bx = fed_aligned_alloc(batch * dim, sizeof(float)); /* batch <= n: fits */
    int32_t *by = fed_mallocarray(batch, sizeof *by);
    float *scratch = fed_mallocarray(dim, sizeof(float));
    float *best = NULL;
    err = FED_ENOMEM;
    if (!order || !bx || !by || !scratch) goto done;
    const fed_loss_config loss = loss_for(m, &c->loss);
    if (validate && c->restore_best) {
        best = fed_mallocarray(fed_model_num_params(m), sizeof(float));
        if (!best) goto done;
    }
    if ((err = fed_optim_new(&o, m, &c->optim))) goto done;
    if ((err = fed_arena_new(&arena, 0))) goto done;

    fed_rng order_rng = fed_rng_stream(c->seed, STREAM_ORDER);
    fed_rng drop_rng = fed_rng_stream(c->seed, STREAM_DROPOUT);
    fed_rng aug_rng = fed_rng_stream(c->seed, STREAM_AUGMENT);
    const bool augment = !fed_augment_is_identity(&c->augment);
    size_t since_best = 0;
    bool stop = false;

    for (size_t e = 1; e <= c->epochs && !stop; e++) {
        fed_data_order(order, n, &order_rng);
        double t0 = fed_now_s(), loss_sum = 0.0;
        size_t correct = 0, seen = 0, preds = 0;
        float lr = 0.0f;
        for (size_t s = 0, k = 0; s < n; s += batch, k++) {
            if (c->max_steps && r->steps >= c->max_steps) {
                stop = true;
                break;
            }
            if (c->stop_at > 0 && fed_now_s() >= c->stop_at) {
                r->out_of_time = true;
                stop = true;
                break;
            }
            size_t nb = n - s < batch ? n - s : batch;
            fed_data_gather(train, order + s, nb, bx, by);
            if (augment) fed_augment_batch(bx, nb, &train->shape, &c->augment, &aug_rng, scratch);
            fed_batch b = {bx, by, NULL, nb};
            fed_step_stats st;
            lr = fed_schedule_lr(&sched, r->steps);
            if ((err = fed_train_step(m, o, arena, &b, &loss, lr, &drop_rng, &st))) goto done;
            r->steps++;
            r->examples += nb;
            if (!isfinite(st.loss)) {
                err = fed_errorf(FED_ENONFINITE,
                                 "epoch %zu, step %zu: the training loss is not finite (lower "
                                 "the learning rate or clip gradients)",
                                 e, k + 1);
                goto done;
            }
            loss_sum += st.loss * (double)st.count;
            correct += st.correct;
            preds += st.count;
            seen += nb;
            if (c->on_step) c->on_step(c->user, k + 1, steps_per_epoch);
        }
        if (seen == 0) break;
        fed_epoch_stats es;
        memset(&es, 0, sizeof es);
        es.epoch = e;
        es.epochs = c->epochs;
        es.seconds = fed_now_s() - t0;
        es.train_loss = preds ? loss_sum / (double)preds : 0.0;
        es.train_acc = preds ? (double)correct / (double)preds : 0.0;
        es.predictions = preds;
        es.examples_per_s = (double)seen / (es.seconds > 0.0 ? es.seconds : 1e-9);
        es.lr = (double)lr;
        es.val_loss = es.val_acc = (double)NAN;
        r->epochs_run = e;
        r->final_train_loss = es.train_loss;
        if (validate) {
            if ((err = val_pass(m, arena, val, eval_batch, &loss, &es.val_loss, &es.val_acc)))
                goto done;
            if (r->best_epoch == 0 || es.val_loss < r->best_val_loss - c->min_delta) {
                es.best = true;
                r->best_epoch = e;
                r->best_val_loss = es.val_loss;
                since_best = 0;
                if (best)
                    memcpy(best, fed_model_params_const(m), fed_model_num_params(m) * sizeof *best);
            } else if (c->patience && ++since_best >= c->patience) {
                r->stopped_early = true;
                stop = true;
            }
        }
        if (c->on_epoch && !c->on_epoch(c->user, &es)) stop = true;
    }
    err = FED_OK;
done:
    if (best && r->best_epoch)
        memcpy(fed_model_params(m), best, fed_model_num_params(m) * sizeof *best);
    r->seconds = fed_now_s() - t_fit;
    fed_free(best);
    fed_free(scratch);
    fed_free(by);
    fed_free(bx);
    fed_free(order);
    fed_arena_destroy(&arena);
    fed_optim_destroy(&o);
    return err;
}

/* ---- evaluation ---------------------------------------------------------------------- */

void fed_eval_result_free(fed_eval_result *r) {
    fed_free(r->confusion);
    fed_free(r->precision);
    fed_free(r->recall);
    fed_free(r->f1);
    fed_free(r->support);
    memset(r, 0, sizeof *r);
}

/* A language model's evaluation: the mean NLL per predicted token, the arg-max accuracy
 * over them and the perplexity; no confusion matrix (V classes at each of T positions). */
static fed_err evaluate_lm(fed_model *m, const fed_dataset *d, size_t batch, float smoothing,
                           fed_eval_result *r) {
    fed_arena *arena = NULL;
    fed_err err = fed_arena_new(&arena, 0);
    if (err) return err;
    fed_loss_config loss = {FED_LOSS_NEXT_TOKEN, smoothing};
    float *buf = NULL; /* a batch of a byte set's rows */
    double total = 0.0;
    size_t correct = 0, count = 0;
    for (size_t s = 0; s < d->n && !err; s += batch) {
        size_t nb = d->n - s < batch ? d->n - s : batch;
        fed_batch b = {rows_at(d, s, nb, batch, &buf), NULL, NULL, nb};
        fed_step_stats st;
        if (!b.x) err = FED_ENOMEM;
        if (err || (err = fed_eval_batch(m, arena, &b, &loss, &st))) break;
        total += st.loss * (double)st.count;
        correct += st.correct;
        count += st.count;
    }
    fed_arena_destroy(&arena);
    fed_free(buf);
    if (err) return err;
    if (count == 0)
        return fed_errorf(FED_EINVAL, "the evaluation set has no token to predict (every text "
                                      "is one token long)");
    r->n = d->n;
    r->predictions = count;
    r->loss = count ? total / (double)count : 0.0;
    r->accuracy = count ? (double)correct / (double)count : 0.0;
    r->perplexity = exp(r->loss);
    return FED_OK;
}

/* ---- evaluation of a classifier on several threads --------------------------------- */

/* One thread's share of an evaluation: it takes batches in turn from a shared counter
 * and writes each batch's summed loss into its slot, so the mean is summed in batch
 * order and is the same to the last bit whatever the number of threads. */
typedef struct eval_part {
    fed_model *m;            /* this thread's model: the caller's, or a copy */
    const fed_dataset *d;    /* the evaluation set */
    size_t batch, K, nbatch; /* batch size, classes, batches */
    float smoothing;         /* of the loss value */
    atomic_size_t *next;     /* shared: the next batch to take */
    atomic_bool *stop;       /* shared: a thread failed */
    double *loss;            /* shared (nbatch): each batch's summed loss */
    size_t *confusion;       /* this thread's (K, K) counts */
    fed_err err;             /* how it failed */
    char why[512];           /* and the detail, from its own thread */
} eval_part;

static void eval_run(eval_part *p) {
    const fed_dataset *d = p->d;
    fed_arena *arena = NULL;
    float *buf = NULL; /* a batch of a byte set's rows */
    p->err = fed_arena_new(&arena, 0);
    while (!p->err && !atomic_load(p->stop)) {
        size_t b = atomic_fetch_add(p->next, 1);
        if (b >= p->nbatch) break;
        size_t s = b * p->batch, nb = d->n - s < p->batch ? d->n - s : p->batch;
        const int32_t *y = d->y + s;
        const float *out, *x = rows_at(d, s, nb, p->batch, &buf);
        fed_arena_reset(arena);
        p->err = x ? fed_model_forward(p->m, arena, x, nb, FED_MODE_EVAL, NULL, &out) : FED_ENOMEM;
        if (p->err) break;
        p->loss[b] = fed_softmax_ce(NULL, out, y, nb, p->K, p->smoothing) * (double)nb;
        for (size_t i = 0; i < nb; i++)
            p->confusion[(size_t)y[i] * p->K + fed_argmax(out + i * p->K, p->K)]++;
    }
    if (p->err) {
        snprintf(p->why, sizeof p->why, "%s", fed_errdetail(p->err));
        atomic_store(p->stop, true);
    }
    fed_arena_destroy(&arena);
    fed_free(buf);
}

static void *eval_thread(void *arg) {
    eval_run(arg);
    return NULL;
}

/* Starts part t >= 1 on its own thread with its own copy of m and confusion counts; on
 * failure it leaves nothing behind. */
static fed_err start_part(eval_part *p, pthread_t *th, const fed_model *m, size_t K, size_t t) {
    p->confusion = fed_calloc(K * K, sizeof *p->confusion);
    fed_err err = p->confusion ? fed_model_clone(&p->m, m) : FED_ENOMEM;
    if (!err && pthread_create(th, NULL, eval_thread, p) != 0) {
        err = fed_errorf(FED_EINTERNAL, "evaluation: cannot start thread %zu", t);
        fed_model_destroy(&p->m);
    }
    if (err) fed_free(p->confusion);
    return err;
}

/* Fills r->confusion (zeroed, K x K) and r->loss over d on `threads` threads; the first
 * runs on the caller's model, the others on copies. */
static fed_err eval_pass(fed_model *m, const fed_dataset *d, size_t batch, float smoothing,
                         size_t threads, fed_eval_result *r) {
    const size_t K = r->num_classes, nbatch = (d->n + batch - 1) / batch;
    if (threads > nbatch) threads = nbatch;
    if (threads == 0) threads = 1;
    atomic_size_t next = 0;
    atomic_bool stop = false;
    eval_part *parts = fed_calloc(threads, sizeof *parts);
    double *loss = fed_calloc(nbatch, sizeof *loss);
    pthread_t *th = fed_calloc(threads, sizeof *th);
    fed_err err = parts && loss && th ? FED_OK : FED_ENOMEM;
    size_t started = 0; /* parts running: 0 (the caller's) and 1 .. started - 1 */
    for (size_t t = 0; !err && t < threads; t++) {
        eval_part *p = &parts[t];
        *p = (eval_part){.m = m, .d = d, .batch = batch, .K = K, .nbatch = nbatch};
        p->smoothing = smoothing;
        p->next = &next;
        p->stop = &stop;
        p->loss = loss;
        p->confusion = r->confusion;
        if (t && (err = start_part(p, &th[t], m, K, t))) break;
        started = t + 1;
    }
    if (!err)
        eval_run(&parts[0]);
    else
        atomic_store(&stop, true);
    for (size_t t = 1; t < started; t++) pthread_join(th[t], NULL);
    for (size_t t = 0; t < started; t++) {
        eval_part *p = &parts[t];
        if (!err && p->err) err = fed_errorf(p->err, "%s", p->why);
        if (t == 0) continue;
        for (size_t i = 0; i < K * K; i++) r->confusion[i] += p->confusion[i];
        fed_free(p->confusion);
        fed_model_destroy(&p->m);
    }
    double total = 0.0;
    for (size_t b = 0; !err && b < nbatch; b++) total += loss[b];
    r->loss = total / (double)d->n;
    fed_free(parts);
    fed_free(loss);
    fed_free(th);
    return err;
}

fed_err fed_evaluate_threads(fed_model *m, const fed_dataset *d, size_t batch,
                             const fed_loss_config *loss, size_t threads, fed_eval_result *r) {
    memset(r, 0, sizeof *r);
    r->perplexity = (double)NAN;
    fed_err err = check_data(m, d, "evaluation");
    if (err) return err;
    if (d->n == 0) return fed_errorf(FED_EINVAL, "the evaluation set is empty");
    if (fed_loss_for_model(m) == FED_LOSS_NEXT_TOKEN)
        return evaluate_lm(m, d, batch ? batch : DEFAULT_EVAL_BATCH,
                           loss ? loss->label_smoothing : 0.0f, r);
    const float smoothing = loss ? loss->label_smoothing : 0.0f;
    if (!(smoothing >= 0.0f && smoothing < 1.0f))
        return fed_errorf(FED_EINVAL, "label smoothing %g: must be in [0, 1)", (double)smoothing);
    const size_t K = fed_model_output_size(m), KK = K * K; /* K * K <= params: no overflow */
    if (batch == 0) batch = DEFAULT_EVAL_BATCH;
    r->n = d->n;
    r->predictions = d->n;
    r->num_classes = K;
    r->confusion = fed_calloc(KK, sizeof *r->confusion);
    r->precision = fed_calloc(K, sizeof *r->precision);
    r->recall = fed_calloc(K, sizeof *r->recall);
    r->f1 = fed_calloc(K, sizeof *r->f1);
    r->support = fed_calloc(K, sizeof *r->support);
    err = FED_ENOMEM;
    if (!r->confusion || !r->precision || !r->recall || !r->f1 || !r->support) goto fail;
    for (size_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0 || (size_t)d->y[i] >= K) {
            err = fed_errorf(FED_ERANGE, "example %zu: label %d outside [0, %zu)", i, (int)d->y[i],
                             K);
            goto fail;
        }
    }
    if ((err = eval_pass(m, d, batch, smoothing, threads, r))) goto fail;
    size_t correct = 0;
    for (size_t k = 0; k < K; k++) correct += r->confusion[k * K + k];
    r->accuracy = (double)correct / (double)d->n;

    double f1_sum = 0.0;
    size_t present = 0;
    for (size_t k = 0; k < K; k++) {
        size_t tp = r->confusion[k * K + k], actual = 0, predicted = 0;
        for (size_t j = 0; j < K; j++) {
            actual += r->confusion[k * K + j];
            predicted += r->confusion[j * K + k];
        }
        r->support[k] = actual;
        r->precision[k] = predicted ? (double)tp / (double)predicted : 0.0;
        r->recall[k] = actual ? (double)tp / (double)actual : 0.0;
        double pr = r->precision[k] + r->recall[k];
        r->f1[k] = pr > 0.0 ? 2.0 * r->precision[k] * r->recall[k] / pr : 0.0;
        if (actual || predicted) {
            f1_sum += r->f1[k];
            present++;
        }
    }
    r->macro_f1 = present ? f1_sum / (double)present : 0.0;
    return FED_OK;
fail:
    fed_eval_result_free(r);
    return err;
}

fed_err fed_evaluate(fed_model *m, const fed_dataset *d, size_t batch, const fed_loss_config *loss,
                     fed_eval_result *r) {
    return fed_evaluate_threads(m, d, batch, loss, 1, r);
}

/* ---- a round's training spec as fed_fit's configuration (fed_train_spec_fit) ---------- */

static const char *spec_optimizer(const fed_train_spec *s) {
    return s->optimizer && s->optimizer[0] ? s->optimizer : "sgd";
}

fed_err fed_train_spec_fit(const fed_train_spec *s, uint64_t round, size_t max_epochs,
                           size_t max_batch, fed_fit_config *out) {
    fed_err err = fed_train_spec_check(s);
    if (err) return err;
    fed_opt_kind kind;
    if ((err = fed_opt_parse(spec_optimizer(s), &kind))) return err; /* checked above */
    fed_fit_config f = fed_fit_defaults();
    f.optim = fed_optim_defaults(kind);
    if (kind == FED_OPT_SGD) f.optim.momentum = s->momentum;
    f.optim.weight_decay = s->weight_decay;
    f.optim.clip_norm = s->clip_norm;
    if ((err = fed_optim_config_check(&f.optim))) return fed_errprefix(err, "config");
    f.schedule = fed_fit_schedule(FED_SCHED_CONSTANT, s->lr);
    f.epochs = s->epochs;
    if (max_epochs && f.epochs > max_epochs) f.epochs = max_epochs;
    f.batch = s->batch;
    if (max_batch && f.batch > max_batch) f.batch = max_batch;
    f.loss.kind = FED_LOSS_SOFTMAX_CE;
    f.loss.label_smoothing = 0.0f;
    f.patience = 0;
    f.min_delta = 0.0;
    f.restore_best = false;
    memset(&f.augment, 0, sizeof f.augment);
    f.seed = s->seed + round;
    f.max_steps = s->max_steps > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)s->max_steps;
    f.on_epoch = NULL;
    f.on_step = NULL;
    f.user = NULL;
    *out = f;
    return FED_OK;
}

fed_err fed_evaluate_ce(fed_model *m, const fed_dataset *d, size_t batch, double *loss,
                        double *accuracy) {
    return fed_evaluate_ce_threads(m, d, batch, 1, loss, accuracy);
}

fed_err fed_evaluate_ce_threads(fed_model *m, const fed_dataset *d, size_t batch, size_t threads,
                                double *loss, double *accuracy) {
    fed_loss_config ce = {fed_loss_for_model(m), 0.0f};
    fed_eval_result r;
    fed_err err = fed_evaluate_threads(m, d, batch, &ce, threads, &r);
    *loss = r.loss;
    *accuracy = r.accuracy;
    fed_eval_result_free(&r);
    return err;
}
