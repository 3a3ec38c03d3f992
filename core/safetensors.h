/* safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header, then the raw tensor bytes. The header maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
 * to the first byte after the header) and may hold "__metadata__", a flat object of
 * string values. fedtune writes F32 and reads F32, F16 and BF16 (converted to F32).
 *
 * Reading validates everything before anything is trusted: header length within the
 * file and below FED_ST_MAX_HEADER, JSON well formed, dtype known, shape product times
 * dtype size equal to the byte range, ranges inside the data section, sorted ranges
 * neither overlapping nor leaving holes and ending exactly at the end of the file (as the
 * reference implementation demands). Every failure is FED_EFORMAT with a detail naming
 * the file and the tensor or field, except FED_EUNSUPPORTED for a valid file fedtune
 * cannot use (another dtype such as I64, more than FED_ST_MAX_DIMS dimensions); no
 * allocation is ever sized by a header field that was not first checked against the
 * real file size. Beyond the reference rules the header must be valid UTF-8, start with
 * '{', hold no control characters nor \u0000, and each entry must have exactly the
 * three keys; whitespace after the JSON (the reference writer pads with spaces) is fine.
 *
 * The model-level functions map a file onto a model's tensor table by name: the
 * architecture travels in __metadata__["fedtune.arch"] (canonical JSON), so a file
 * fedtune wrote is self-describing; other metadata keys are the caller's (fed_meta). */
#ifndef FED_SAFETENSORS_H
#define FED_SAFETENSORS_H

#include "core/err.h"
#include "core/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest header accepted (the reference implementation's limit is 100 MB). */
#define FED_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Most dimensions per tensor accepted on reading. */
#define FED_ST_MAX_DIMS 8

typedef enum fed_st_dtype {
    FED_ST_F32 = 0,  /* "F32" */
    FED_ST_F16 = 1,  /* "F16", IEEE half */
    FED_ST_BF16 = 2, /* "BF16", bfloat16 */
} fed_st_dtype;

/* "F32", "F16", "BF16". */
const char *fed_st_dtype_name(fed_st_dtype d);

/* ---- metadata: an ordered list of string key/value pairs ----------------------------- */

typedef struct fed_meta fed_meta;

fed_err fed_meta_new(fed_meta **out) FED_MUST_USE;
void fed_meta_destroy(fed_meta **m);
/* Sets (replaces) key; both strings are copied. */
fed_err fed_meta_set(fed_meta *m, const char *key, const char *value) FED_MUST_USE;
/* Removes key (nothing when absent); the other pairs keep their order. */
void fed_meta_unset(fed_meta *m, const char *key);
/* The value of key, or NULL. Valid until the next fed_meta_set of that key. */
const char *fed_meta_get(const fed_meta *m, const char *key);
size_t fed_meta_count(const fed_meta *m);
/* Pair i in insertion order. */
const char *fed_meta_key(const fed_meta *m, size_t i);
const char *fed_meta_value(const fed_meta *m, size_t i);

/* ---- reading ------------------------------------------------------------------------- */

/* One tensor entry of a parsed header. */
typedef struct fed_st_tensor {
    const char *name;                /* owned by the file */
    fed_st_dtype dtype;              /* element type on disk */
    int ndim;                        /* 0..FED_ST_MAX_DIMS (0: a scalar) */
    uint64_t shape[FED_ST_MAX_DIMS]; /* sizes, outermost first */
    uint64_t numel;                  /* product of shape */
    uint64_t begin, end;             /* byte range within the data section */
} fed_st_tensor;

typedef struct fed_st_file fed_st_file;

/* Reads and validates a whole file (tensors sorted by data offset); the file is read
 * into memory once. FED_EIO (path and strerror) if it cannot be read. */
fed_err fed_st_read(fed_st_file **out, const char *path) FED_MUST_USE;
/* The same from memory (copied); `what` names the source in error messages. */
fed_err fed_st_parse(fed_st_file **out, const void *buf, size_t len, const char *what) FED_MUST_USE;
/* NULL-safe; sets *f to NULL. */
void fed_st_close(fed_st_file **f);

/* The path or `what` the file was read from, as used in its error messages. */
const char *fed_st_what(const fed_st_file *f);

size_t fed_st_count(const fed_st_file *f);
const fed_st_tensor *fed_st_at(const fed_st_file *f, size_t i);
/* The entry named name, or NULL. */
const fed_st_tensor *fed_st_find(const fed_st_file *f, const char *name);
/* The file's __metadata__ (empty when absent); owned by the file. */
const fed_meta *fed_st_meta(const fed_st_file *f);
/* Converts tensor t (an entry of f) to float32 into dst, which holds t->numel floats.
 * Exact for every dtype (F16 subnormals, infinities and NaN payloads included). */
void fed_st_copy_f32(const fed_st_file *f, const fed_st_tensor *t, float *dst);

/* ---- writing ------------------------------------------------------------------------- */

/* One F32 tensor to write; data is borrowed. */
typedef struct fed_st_entry {
    const char *name;    /* unique, non-empty, valid UTF-8, not "__metadata__" */
    int ndim;            /* 0..FED_ST_MAX_DIMS */
    const size_t *shape; /* (ndim) sizes, each below 2^53 */
    const float *data;   /* numel floats, host order (written little-endian) */
} fed_st_entry;

/* Writes n tensors (in the given order, packed contiguously) and the metadata to path,
 * through path.tmp.XXXXXX + fsync + rename, so path is either the old file or the new
 * one, never a partial write. meta may be NULL (no "__metadata__" is written when it is
 * NULL or empty). The header comes first as {"__metadata__":{...},"name":{...},...},
 * padded with spaces so the data starts 8-byte aligned. FED_EINVAL for a bad entry
 * (message names it), FED_EIO naming the path and strerror(errno) for any I/O failure
 * (the temporary file is removed). A new file gets mode 0644, a replaced one keeps its
 * mode. */
fed_err fed_st_write(const char *path, const fed_st_entry *t, size_t n,
                     const fed_meta *meta) FED_MUST_USE;

/* The same file as bytes in memory: *out (*len bytes) is freed with fed_free. */
fed_err fed_st_encode(void **out, size_t *len, const fed_st_entry *t, size_t n,
                      const fed_meta *meta) FED_MUST_USE;

/* ---- models -------------------------------------------------------------------------- */

/* Metadata keys fedtune writes. */
#define FED_META_ARCH    "fedtune.arch"    /* canonical architecture JSON */
#define FED_META_VERSION "fedtune.version" /* writer's version string */
#define FED_META_FROZEN  "fedtune.frozen"  /* JSON array of frozen tensor names */

/* Saves every tensor of m as F32 under its table name, plus FED_META_ARCH,
 * FED_META_VERSION, FED_META_FROZEN (in that order) and then the pairs of extra (may be
 * NULL; its fedtune.arch/version/frozen keys are ignored). Atomic as fed_st_write. */
fed_err fed_model_save(const fed_model *m, const char *path, const fed_meta *extra) FED_MUST_USE;

typedef enum fed_load_flags {
    FED_LOAD_STRICT = 0,
    FED_LOAD_ALLOW_EXTRA = 1 << 0,   /* ignore file tensors the model lacks */
    FED_LOAD_ALLOW_MISSING = 1 << 1, /* keep the model's values where the file lacks one */
} fed_load_flags;

/* Copies the file's tensors into m by name. Errors name the tensor: FED_ENOTFOUND for a
 * tensor of m missing from the file, FED_EFORMAT for an extra one, FED_ESHAPE for a
 * shape mismatch (both shapes in the message). m is untouched on any error. */
fed_err fed_model_load_weights(fed_model *m, const fed_st_file *f, unsigned flags) FED_MUST_USE;

/* Builds a model from a self-describing file: architecture from FED_META_ARCH, all
 * weights (strict), frozen flags from FED_META_FROZEN. *meta_out (may be NULL)
 * receives a copy of the file's metadata. Errors name the file: FED_EFORMAT when
 * fedtune.arch is absent ("pass an architecture": build the model yourself and use
 * fed_model_load_weights), when the architecture needs more values than the file holds
 * (checked before anything is allocated for it) or when fedtune.frozen is not a JSON
 * array of the model's tensor names; the architecture parser's code for a bad
 * fedtune.arch; as fed_st_read and fed_model_load_weights otherwise. */
fed_err fed_model_load(fed_model **out, const char *path, fed_meta **meta_out) FED_MUST_USE;

#endif
