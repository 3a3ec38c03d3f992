/* Shared by the test tools: a model from a self-describing file, or from a weights-only
 * file and its architecture. */
#ifndef FED_TEST_TOOLS_MODEL_FOR_H
#define FED_TEST_TOOLS_MODEL_FOR_H

#include "core/arch.h"
#include "core/model.h"
#include "core/safetensors.h"

/* The model of file path: its fedtune.arch when spec is NULL, else spec's architecture
 * with the file's weights (strict). */
static fed_err model_for(fed_model **out, const char *path, const char *spec) {
    if (!spec) return fed_model_load(out, path, NULL);
    fed_arch *a = NULL;
    fed_st_file *f = NULL;
    fed_err err = fed_arch_parse(&a, spec);
    if (!err) err = fed_model_new(out, a);
    if (!err) err = fed_st_read(&f, path);
    if (!err) err = fed_model_load_weights(*out, f, FED_LOAD_STRICT);
    if (err) fed_model_destroy(out);
    fed_st_close(&f);
    fed_arch_destroy(&a);
    return err;
}

#endif
