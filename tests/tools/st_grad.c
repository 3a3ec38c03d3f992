/* Test tool for the PyTorch autograd comparison (tests/interop_torch_transformer.sh); not
 * installed. One training step's worth of numbers for one batch, without the update:
 *
 *   st_grad MODEL.safetensors BATCH.safetensors OUT.safetensors [--arch SPEC]
 *           [--freeze GLOBS]
 *
 * MODEL carries fedtune.arch, or --arch gives the architecture and the file's weights are
 * loaded strictly by name. --freeze marks tensors frozen as `fedtune train --freeze` does.
 * BATCH holds "x" (N, input_size) (token ids as floats, -1 padding) and "labels" (N), the
 * class ids as floats. The tool zeroes the gradients, runs the model forward in train mode,
 * takes the mean softmax cross-entropy of the output against the labels (a language model:
 * the next-token loss, fed_loss_for_model; its labels must be 0) and back-propagates it; OUT
 * receives "output" (N, C), "loss" (1) and "grad.<tensor>" for every trainable tensor (frozen ones
 * have none). Nothing here computes: it only drives core/. */
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/loss.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "core/train.h"
#include "tests/tools/model_for.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Most examples in one batch: the comparison needs a handful. */
#define MAX_BATCH 4096

static int usage(void) {
    fprintf(stderr, "usage: st_grad MODEL.safetensors BATCH.safetensors OUT.safetensors "
                    "[--arch SPEC] [--freeze GLOBS]\n");
    return 2;
}

/* The batch file's inputs (*x, n x isz floats) and labels (*labels, n ids < classes). */
static fed_err read_batch(const char *path, size_t isz, size_t classes, float **x, int32_t **labels,
                          size_t *n) {
    fed_st_file *f = NULL;
    float *lab = NULL;
    fed_err err = fed_st_read(&f, path);
    if (err) return err;
    const fed_st_tensor *tx = fed_st_find(f, "x"), *tl = fed_st_find(f, "labels");
    if (!tx || !tl) {
        err = fed_errorf(FED_EFORMAT, "%s: tensor \"%s\" missing", path, tx ? "labels" : "x");
        goto fail;
    }
    if (tx->ndim != 2 || tx->shape[0] < 1 || tx->shape[0] > MAX_BATCH || tx->shape[1] != isz) {
        err = fed_errorf(FED_ESHAPE,
                         "%s: tensor \"x\": shape must be (N, %zu) with N in [1, %d], got %d "
                         "dimension(s) (%llu, ...)",
                         path, isz, MAX_BATCH, tx->ndim,
                         tx->ndim ? (unsigned long long)tx->shape[0] : 0ULL);
        goto fail;
    }
    *n = (size_t)tx->shape[0];
    if (tl->ndim != 1 || tl->shape[0] != *n) {
        err = fed_errorf(FED_ESHAPE, "%s: tensor \"labels\": shape must be (%zu)", path, *n);
        goto fail;
    }
    err = FED_ENOMEM;
    *x = fed_mallocarray(*n * isz, sizeof(float));
    *labels = fed_mallocarray(*n, sizeof(int32_t));
    lab = fed_mallocarray(*n, sizeof(float));
    if (!*x || !*labels || !lab) goto fail;
    fed_st_copy_f32(f, tx, *x);
    fed_st_copy_f32(f, tl, lab);
    for (size_t i = 0; i < *n; i++) {
        if (!(lab[i] >= 0.0f && lab[i] < (float)classes) || lab[i] != floorf(lab[i])) {
            err = fed_errorf(FED_ERANGE,
                             "%s: tensor \"labels\": entry %zu is %g, not a class id in [0, %zu)",
                             path, i, (double)lab[i], classes);
            goto fail;
        }
        (*labels)[i] = (int32_t)lab[i];
    }
    err = FED_OK;
fail:
    fed_free(lab);
    fed_st_close(&f);
    return err;
}

/* "output", "loss" and the gradient of every trainable tensor into path. */
static fed_err write_result(const char *path, fed_model *m, const float *y, size_t n, float loss) {
    size_t nt = fed_model_num_tensors(m), C = fed_model_output_size(m), k = 0;
    size_t yshape[2] = {n, C}, lshape[1] = {1};
    fed_st_entry *e = fed_mallocarray(nt + 2, sizeof *e);
    char(*names)[FED_TENSOR_NAME_MAX + 8] = fed_mallocarray(nt + 1, sizeof *names);
    fed_err err = FED_ENOMEM;
    if (!e || !names) goto fail;
    e[k++] = (fed_st_entry){"output", 2, yshape, y};
    e[k++] = (fed_st_entry){"loss", 1, lshape, &loss};
    const float *g = fed_model_grads(m);
    for (size_t i = 0; i < nt; i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        snprintf(names[i], sizeof names[i], "grad.%s", t->name);
        e[k++] = (fed_st_entry){names[i], t->ndim, t->shape, g + t->offset};
    }
    err = fed_st_write(path, e, k, NULL);
fail:
    fed_free(e);
    fed_free(names);
    return err;
}

static fed_err run(const char *model, const char *batch, const char *out, const char *spec,
                   const char *freeze) {
    fed_model *m = NULL;
    fed_arena *arena = NULL;
    float *x = NULL, *dy = NULL;
    int32_t *labels = NULL;
    size_t n = 0;
    fed_err err = model_for(&m, model, spec);
    if (err) goto fail;
    if (freeze && (err = fed_model_set_trainable_spec(m, freeze, false, NULL))) goto fail;
    size_t C = fed_model_output_size(m);
    if ((err = read_batch(batch, fed_model_input_size(m), C, &x, &labels, &n))) goto fail;
    if ((err = fed_arena_new(&arena, 0))) goto fail;
    err = FED_ENOMEM;
    if (!(dy = fed_mallocarray(n * C, sizeof(float)))) goto fail;
    const float *y;
    fed_model_zero_grad(m);
    if ((err = fed_model_forward(m, arena, x, n, FED_MODE_TRAIN, NULL, &y))) goto fail;
    float loss;
    if (fed_loss_for_model(m) == FED_LOSS_NEXT_TOKEN) {
        size_t T = fed_model_input_size(m), count, correct;
        loss = (float)fed_next_token_ce(dy, y, x, n, T, C / T, &count, &correct);
    } else {
        loss = (float)fed_softmax_ce(dy, y, labels, n, C, 0.0f);
    }
    if ((err = fed_model_backward(m, arena, dy))) goto fail;
    err = write_result(out, m, y, n, loss);
fail:
    fed_free(x);
    fed_free(dy);
    fed_free(labels);
    fed_arena_destroy(&arena);
    fed_model_destroy(&m);
    return err;
}

int main(int argc, char **argv) {
    const char *spec = NULL, *freeze = NULL, *pos[3];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--arch") == 0 && i + 1 < argc)
            spec = argv[++i];
        else if (strcmp(argv[i], "--freeze") == 0 && i + 1 < argc)
            freeze = argv[++i];
        else if (npos < 3 && argv[i][0] != '-')
            pos[npos++] = argv[i];
        else
            return usage();
    }
    if (npos != 3) return usage();
    fed_err err = run(pos[0], pos[1], pos[2], spec, freeze);
    if (err) {
        fprintf(stderr, "st_grad: %s (%s)\n", fed_errdetail(err), fed_errname(err));
        return 1;
    }
    return 0;
}
