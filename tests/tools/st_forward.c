/* Test tool for the PyTorch interoperability test (tests/interop_torch.sh); not
 * installed. Runs a model stored as safetensors on raw float32 inputs, or writes a
 * freshly initialised model:
 *
 *   st_forward MODEL.safetensors INPUT.f32 N OUTPUT.f32 [--arch SPEC]
 *   st_forward --save OUT.safetensors --arch SPEC
 *
 * INPUT holds N examples of input_size little-endian float32 each; OUTPUT receives N x
 * output_size of them, computed in eval mode. With --arch the model is built from SPEC
 * (JSON or a preset) and the file's weights are loaded strictly by name; without it the
 * file must carry fedtune.arch. --save initialises with seed 7. */
#include "core/alloc.h"
#include "core/arch.h"
#include "core/arena.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "tests/tools/model_for.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Examples per forward pass. */
#define BATCH 64

static int usage(void) {
    fprintf(stderr, "usage: st_forward MODEL.safetensors INPUT.f32 N OUTPUT.f32 [--arch SPEC]\n"
                    "       st_forward --save OUT.safetensors --arch SPEC\n");
    return 2;
}

static fed_err save(const char *path, const char *spec) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    fed_err err = fed_arch_parse(&a, spec);
    if (!err) err = fed_model_new(&m, a);
    if (!err) {
        fed_model_init(m, 7);
        err = fed_model_save(m, path, NULL);
    }
    fed_model_destroy(&m);
    fed_arch_destroy(&a);
    return err;
}

static fed_err forward(const char *model, const char *in_path, size_t n, const char *out_path,
                       const char *spec) {
    fed_model *m = NULL;
    fed_arena *arena = NULL;
    FILE *in = NULL, *out = NULL;
    float *x = NULL;
    unsigned char *bytes = NULL;
    fed_err err = model_for(&m, model, spec);
    if (err) goto done;
    size_t isz = fed_model_input_size(m), osz = fed_model_output_size(m);
    size_t cap = BATCH * (isz > osz ? isz : osz);
    err = FED_ENOMEM;
    x = fed_mallocarray(cap, sizeof *x);
    bytes = fed_mallocarray(cap, 4);
    if (!x || !bytes || (err = fed_arena_new(&arena, 0))) goto done;
    err = FED_EIO;
    if (!(in = fopen(in_path, "rb"))) {
        err = fed_errorf(FED_EIO, "%s: cannot open", in_path);
        goto done;
    }
    if (!(out = fopen(out_path, "wb"))) {
        err = fed_errorf(FED_EIO, "%s: cannot create", out_path);
        goto done;
    }
    for (size_t seen = 0; seen < n;) {
        size_t b = n - seen < BATCH ? n - seen : BATCH;
        if (fread(bytes, 4, b * isz, in) != b * isz) {
            err = fed_errorf(FED_EIO, "%s: fewer than %zu examples of %zu floats", in_path, n, isz);
            goto done;
        }
        for (size_t i = 0; i < b * isz; i++) {
            const unsigned char *p = bytes + 4 * i;
            uint32_t u =
                (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            memcpy(&x[i], &u, 4);
        }
        const float *y;
        fed_arena_reset(arena);
        if ((err = fed_model_forward(m, arena, x, b, FED_MODE_EVAL, NULL, &y))) goto done;
        for (size_t i = 0; i < b * osz; i++) {
            uint32_t u;
            memcpy(&u, &y[i], 4);
            for (int k = 0; k < 4; k++) bytes[4 * i + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        if (fwrite(bytes, 4, b * osz, out) != b * osz) {
            err = fed_errorf(FED_EIO, "%s: write error", out_path);
            goto done;
        }
        seen += b;
    }
    err = FED_OK;
done:
    if (out && fclose(out) != 0 && !err) err = fed_errorf(FED_EIO, "%s: write error", out_path);
    if (in) fclose(in);
    fed_free(x);
    fed_free(bytes);
    fed_arena_destroy(&arena);
    fed_model_destroy(&m);
    return err;
}

int main(int argc, char **argv) {
    const char *spec = NULL, *save_path = NULL, *pos[4];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--arch") == 0 && i + 1 < argc)
            spec = argv[++i];
        else if (strcmp(argv[i], "--save") == 0 && i + 1 < argc)
            save_path = argv[++i];
        else if (npos < 4 && argv[i][0] != '-')
            pos[npos++] = argv[i];
        else
            return usage();
    }
    fed_err err;
    if (save_path) {
        if (!spec || npos) return usage();
        err = save(save_path, spec);
    } else {
        if (npos != 4) return usage();
        char *end;
        unsigned long long n = strtoull(pos[2], &end, 10);
        if (*end || n == 0) return usage();
        err = forward(pos[0], pos[1], (size_t)n, pos[3], spec);
    }
    if (err) {
        fprintf(stderr, "st_forward: %s (%s)\n", fed_errdetail(err), fed_errname(err));
        return 1;
    }
    return 0;
}
