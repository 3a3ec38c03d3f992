/* Internal to api/: the configuration object that api/config.c fills and api/site.c reads
 * when it makes a site. Nothing here is installed; the public API is
 * include/fedtune/fedtune.h. */
#ifndef FED_API_INTERNAL_H
#define FED_API_INTERNAL_H

#include "dataset/dataset.h"

#include <fedtune/fedtune.h>

#include <stddef.h>
#include <stdio.h>

/* The keys of `fedtune client` the library knows (api/config.c's table, same order). */
typedef enum api_key {
    KEY_COORDINATOR,
    KEY_SERVER_NAME,
    KEY_CA,
    KEY_CERT,
    KEY_KEY,
    KEY_DATA,
    KEY_CRL,
    KEY_LABEL,
    KEY_FORMAT,
    KEY_HEADER,
    KEY_MISSING,
    KEY_CLASSES,
    KEY_TOKENIZER,
    KEY_TEXT_LENGTH,
    KEY_DROP_EMPTY,
    KEY_TEST_SPLIT,
    KEY_SEED,
    KEY_STANDARDIZE,
    KEY_THREADS,
    KEY_MAX_EPOCHS,
    KEY_MAX_BATCH,
    KEY_SAVE_UPDATES,
    KEY_BASE_CACHE,
    KEY_STATE_DIR,
    KEY_RECONNECT_INITIAL,
    KEY_RECONNECT_MAX,
    KEY_RECONNECT_JITTER,
    KEY_COUNT
} api_key;

struct fedtune_config {
    char *val[KEY_COUNT]; /* each key's text as set (owned; validated), NULL: the default */
    fed_dataset *mem;     /* data from fedtune_config_set_data (owned), or NULL */
    fedtune_batch_fn src; /* data from a callback, or NULL */
    void *src_user;       /* its argument */
    size_t src_dim;       /* features per example it writes */
    size_t src_classes;   /* classes of its ids */
    char errmsg[512];     /* the last error of a call on this object */
};

/* A key's value as given, or its default ("" for keys without one). */
const char *api_get(const fedtune_config *c, api_key k);
/* Numeric values of keys already validated by fedtune_config_set / _load. */
double api_get_double(const fedtune_config *c, api_key k);
/* fedtune_config_load on an open stream, path naming it in errors (the fuzz target). */
int api_config_read(fedtune_config *c, FILE *f, const char *path);
/* Records fed_errdetail(err) as c's last error and returns err as a status. */
int api_config_fail(fedtune_config *c, fed_err err);

#endif
