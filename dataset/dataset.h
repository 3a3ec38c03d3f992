/* Labeled data sets for classification: loading (CSV, the sklearn CSV flavour, IDX),
 * a cleaning report, seeded stratified splits, standardisation fitted on the training
 * part, augmentation, and the gather step that turns shuffled indices into a batch.
 *
 * A data set is one float matrix (n, dim) plus n int32 class ids, like a model's flat
 * buffer: subsets and batches are copies of rows, never pointer tables; except byte sets
 * (below: IDX images kept as bytes), whose subsets are row lists on a shared store. Bad input gives
 * FED_EFORMAT (or FED_ERANGE for a value out of range) with a detail naming file:line
 * and, for CSV, the 1-based column: "train.csv:17:4: "abc" is not a number". Lines are
 * physical lines of the file, the header and blank lines included. An option that does
 * not fit the file (a label column name not in the header, an index out of range) is
 * FED_EINVAL; a file that cannot be opened or read is FED_EIO naming the path.
 *
 * Labels: when every label cell is a non-negative integer-valued number ("3", "3.0",
 * "3.000e+00" as numpy's savetxt writes) the ids are those integers and num_classes =
 * largest + 1 (FED_ERANGE from FED_DATA_MAX_CLASSES on); otherwise labels are names,
 * mapped to ids in sorted (strcmp) order, and class_names keeps them. A caller that
 * already knows the classes (evaluating a model trained on other files) passes them in
 * fed_csv_options.classes so the ids agree; an unknown name is then an error. A missing
 * label cell is always an error. */
#ifndef FED_DATASET_H
#define FED_DATASET_H

#include "core/arch.h"
#include "core/err.h"
#include "core/rng.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FED_DATA_MAX_CLASSES 65536

/* What the loader saw and did, for the cleaning report. */
typedef struct fed_data_stats {
    size_t rows_read;     /* data rows in the file (header excluded) */
    size_t rows_dropped;  /* dropped by FED_MISSING_DROP */
    size_t cells_imputed; /* replaced by the column mean (FED_MISSING_MEAN) */
} fed_data_stats;

/* The bytes of a byte set, shared by its subsets (dataset_bytes.c; refcounted). */
typedef struct fed_data_bytes fed_data_bytes;

typedef struct fed_dataset {
    size_t n;             /* examples */
    size_t dim;           /* features per example */
    fed_shape shape;      /* example shape: (dim) for tables, (C, H, W) for images */
    float *x;             /* (n, dim), fed_aligned_alloc; NULL in a byte set */
    int32_t *y;           /* (n) class ids in [0, num_classes) */
    size_t num_classes;   /* >= 1 */
    char **class_names;   /* num_classes names, or NULL when labels were integers */
    fed_data_stats stats; /* from the loader; zero for derived sets */
    /* A byte set (IDX ubyte images loaded with keep_bytes): x is NULL and the features
     * stay bytes, a quarter of the floats. Row i is row rows[i] of the shared store
     * `bytes`; subsets, clones and splits of a byte set are byte sets on the same store
     * (they copy rows and y only). Feature j of a row with byte value b reads
     * lut[(j / (dim / lut_groups)) * 256 + b]: exactly the float a float set would hold
     * (b / 255.0f, then each standardisation as fed_std_apply computes it). Read rows
     * with fed_data_row or fed_data_gather; fed_data_densify turns the set into floats. */
    fed_data_bytes *bytes;
    uint32_t *rows;    /* (n) */
    float *lut;        /* (lut_groups, 256) */
    size_t lut_groups; /* 1, or the standardisation's groups */
} fed_dataset;

/* An empty set of n examples of dim features and num_classes classes (x, y zeroed,
 * shape (dim)). n may be 0. */
fed_err fed_data_new(fed_dataset **out, size_t n, size_t dim, size_t num_classes) FED_MUST_USE;
void fed_data_destroy(fed_dataset **d);

/* ---- loading ------------------------------------------------------------------------- */

typedef enum fed_missing_policy {
    FED_MISSING_ERROR = 0, /* an empty or NA/NaN cell is an error naming file:line:column */
    FED_MISSING_DROP = 1,  /* drop the row (counted in stats.rows_dropped); labels seen
                              only in dropped rows make no class */
    FED_MISSING_MEAN = 2,  /* replace by the column mean of the present cells (an error
                              for a column without any) */
} fed_missing_policy;

typedef enum fed_csv_header {
    FED_HEADER_AUTO = 0, /* a header when the first row has a feature cell that is neither
                            a number nor a missing-value token; a label column given by
                            name implies one */
    FED_HEADER_YES = 1,
    FED_HEADER_NO = 2,
} fed_csv_header;

typedef enum fed_data_format {
    /* By content: IDX when the file starts 00 00 (fed_data_load only); the sklearn
     * flavour when the first line is two positive integers and only non-numeric names,
     * and the next line has n_features + 1 fields ending in a class number (below the
     * count of names, if any; without names the row count must match n_samples too);
     * else CSV. */
    FED_FORMAT_AUTO = 0,
    FED_FORMAT_CSV = 1,
    /* First line "n_samples,n_features[,class names...]" (iris:
     * "150,4,setosa,versicolor,virginica"), then rows of n_features floats and an integer
     * label; both counts must match the data. The names, in id order, become class_names
     * and fix num_classes. (sklearn's digits.csv.gz has no such line: it is a plain CSV.) */
    FED_FORMAT_SKLEARN = 2,
    FED_FORMAT_IDX = 3,
} fed_data_format;

typedef struct fed_csv_options {
    fed_data_format format;     /* AUTO by default */
    fed_csv_header header;      /* CSV only */
    const char *label;          /* CSV label column: header name, or 0-based index as
                                   text ("0", "-1" = last; any integer text is an
                                   index); NULL: the last column */
    fed_missing_policy missing; /* empty, "NA", "NaN" (any case), "?" feature cells */
    char delimiter;             /* 0: ','; not '"', '\n' or '\r'. Cells are RFC 4180
                                   ("" escapes a quote inside quotes); spaces, tabs and
                                   '\r' around them are ignored unless the delimiter */
    const char *const *classes; /* known class names in id order, or NULL */
    size_t num_classes;         /* entries of classes */
    bool keep_bytes;            /* IDX: a byte set (fed_dataset) instead of floats */
} fed_csv_options;

/* Splits "blue,green,red" (a --classes list) into *names, *n of them, in one allocation
 * (the pointers, then the text; fed_free(*names) frees both), for
 * fed_csv_options.classes. FED_EINVAL "WHAT: empty name in \"LIST\"" for an empty name
 * (",a", "a,,b", "a,", ""). */
fed_err fed_data_split_names(const char *list, const char *what, char ***names,
                             size_t *n) FED_MUST_USE;

/* Loads path, which may be gzip-compressed (".gz", detected by magic; more than 4 GiB
 * decompressed is FED_ERANGE), in the given format. For IDX, path is the images file
 * ("...images-idx3-ubyte[.gz]"); the labels file is found by replacing "images-idx3"
 * (or "images.idx3") with "labels-idx1" ("labels.idx1") in the file name, or given
 * explicitly with fed_data_load_idx. o may be NULL (all defaults). */
fed_err fed_data_load(fed_dataset **out, const char *path, const fed_csv_options *o) FED_MUST_USE;
/* CSV or sklearn text already in memory (need not be NUL-terminated; a NUL byte in it is
 * an error); what names it in errors. */
fed_err fed_data_parse_csv(fed_dataset **out, const char *text, size_t len, const char *what,
                           const fed_csv_options *o) FED_MUST_USE;
/* IDX images (ubyte, rank 3: n x H x W -> shape (1, H, W); rank 2: n x d -> shape (d);
 * scaled to [0, 1]) and labels (ubyte, rank 1, num_classes = largest + 1); counts must
 * agree and the data must be exactly as long as the header says. Other element types
 * are FED_EUNSUPPORTED. Either file may be gzipped. In fed_data_parse_idx, label errors
 * name "<what> (labels)". */
fed_err fed_data_load_idx(fed_dataset **out, const char *images, const char *labels) FED_MUST_USE;
fed_err fed_data_parse_idx(fed_dataset **out, const void *images, size_t ilen, const void *labels,
                           size_t llen, const char *what) FED_MUST_USE;
/* The same checks, as a byte set (the bytes copied, same values once read). */
fed_err fed_data_parse_idx_bytes(fed_dataset **out, const void *images, size_t ilen,
                                 const void *labels, size_t llen, const char *what) FED_MUST_USE;

/* Inflates gzip data src[0..n) (one or more members; what names it in errors) into a new
 * buffer *out of *outn bytes, followed by a NUL byte that *outn does not count; the
 * caller frees it with fed_free. The sizes the stream claims are never trusted: the
 * buffer grows as data comes and more than 4 GiB is FED_ERANGE. FED_EFORMAT for data
 * that is not gzip, corrupt or truncated, or followed by anything but another member.
 * The one gzip reader of fedtune (the model importer's npm tarballs use it too). */
fed_err fed_data_gunzip(const void *src, size_t n, const char *what, unsigned char **out,
                        size_t *outn) FED_MUST_USE;

/* ---- byte sets ----------------------------------------------------------------------- */

/* Row i of d as dim floats: d->x's row in a float set, else converted into buf (dim
 * floats), which is returned. */
const float *fed_data_row(const fed_dataset *d, size_t i, float *buf);
/* A byte set becomes a float set of the same values (nothing for a float set). */
fed_err fed_data_densify(fed_dataset *d) FED_MUST_USE;
/* For code that reads d->x directly: *view = d for a float set, else a float copy made
 * into *tmp (NULL otherwise; the caller destroys it). */
fed_err fed_data_floats(const fed_dataset *d, const fed_dataset **view,
                        fed_dataset **tmp) FED_MUST_USE;

/* ---- cleaning report ----------------------------------------------------------------- */

typedef struct fed_data_report {
    size_t n, dim, num_classes;
    size_t duplicates;        /* rows whose features AND label equal an earlier row's */
    size_t conflicts;         /* rows whose features equal an earlier row's, label not */
    size_t constant_features; /* columns with a single value */
    size_t *class_counts;     /* num_classes entries, owned by the report */
    double imbalance;         /* largest class count / smallest non-zero one */
    size_t empty_classes;     /* classes in [0, num_classes) with no example */
    size_t nonfinite;         /* cells that are NaN or infinite (0 after loading) */
} fed_data_report;

/* Fills *r (FED_EINVAL for a label outside [0, num_classes)); free with
 * fed_data_report_free. Equal features means equal floats, -0 == 0, NaN == NaN. */
fed_err fed_data_report_new(fed_data_report *r, const fed_dataset *d) FED_MUST_USE;
void fed_data_report_free(fed_data_report *r);

/* ---- subsets and splits -------------------------------------------------------------- */

/* Copies rows idx[0..k) into a new set (shape, classes and names copied; stats zero).
 * FED_EINVAL for an index >= d->n. */
fed_err fed_data_subset(fed_dataset **out, const fed_dataset *d, const size_t *idx,
                        size_t k) FED_MUST_USE;
/* A copy of d (all its examples, in order). */
fed_err fed_data_clone(fed_dataset **out, const fed_dataset *d) FED_MUST_USE;

/* Seeded stratified split: within each class of m examples (shuffled in class order
 * with one rng seeded by seed), the first round(m * val_frac) go to *val, the next
 * round(m * test_frac) to *test, the rest to *train, where round is halves up; when that
 * leaves no training example, test (while it has at least as many as val) and else val
 * give one back until train has one. Each part keeps file order and the shape, classes
 * and names of d. val/test may be NULL when their fraction is 0. FED_EINVAL for
 * fractions outside [0, 1) or summing to >= 1. The same seed and data give the same
 * split bit for bit. */
fed_err fed_data_split(const fed_dataset *d, double val_frac, double test_frac, uint64_t seed,
                       fed_dataset **train, fed_dataset **val, fed_dataset **test) FED_MUST_USE;

/* ---- standardisation ----------------------------------------------------------------- */

/* x' = (x - mean) / std per feature, fitted on one set and applied to others (population
 * std, accumulated in double). Features with std below 1e-12 get std 1. Images use one mean/std
 * over all pixels (per channel) so a shifted digit keeps its meaning. */
typedef struct fed_standardizer {
    size_t dim;  /* features it applies to */
    size_t len;  /* entries of mean/std: dim (per feature) or channels (per channel) */
    float *mean; /* (len) */
    float *std;  /* (len) */
} fed_standardizer;

/* Per feature for tables (shape ndim 1), per channel for images (ndim 3). */
fed_err fed_std_fit(fed_standardizer **out, const fed_dataset *d) FED_MUST_USE;
/* The entries (groups) of a standardizer for inputs of this shape and dim features:
 * channels for images (ndim 3), else features. */
size_t fed_std_groups(const fed_shape *shape, size_t dim);
/* Population mean and variance of d's features in len groups (group g holds features
 * [g * dim / len, (g + 1) * dim / len)), accumulated in double in two passes: what
 * fed_std_fit fits, and what a federation's sites send to fit one standardizer for all
 * (moments of several sets combine exactly: Chan et al.). FED_EINVAL for an empty set,
 * FED_ESHAPE when len does not divide d->dim. */
fed_err fed_std_moments(const fed_dataset *d, size_t len, double *mean, double *var) FED_MUST_USE;
/* The standardizer of given moments (std = sqrt(var); below 1e-12: 1). FED_EINVAL for a
 * len that does not divide dim, a non-finite mean or a negative or non-finite var. */
fed_err fed_std_from_moments(fed_standardizer **out, size_t dim, size_t len, const double *mean,
                             const double *var) FED_MUST_USE;
/* FED_ESHAPE when d->dim differs from s->dim. */
fed_err fed_std_apply(const fed_standardizer *s, fed_dataset *d) FED_MUST_USE;
void fed_std_destroy(fed_standardizer **s);
/* {"dim":D,"mean":[...],"std":[...]}, each float as the shortest of "%.6g".."%.9g" that
 * reads back to the same bits. from_json checks the fields (no unknown keys), lengths
 * (dim, or a divisor of it for channels), finiteness and std > 0: FED_EFORMAT. */
fed_err fed_std_to_json(const fed_standardizer *s, char **json) FED_MUST_USE;
fed_err fed_std_from_json(fed_standardizer **out, const char *json) FED_MUST_USE;

/* ---- batches and augmentation -------------------------------------------------------- */

/* order[i] = i, then a Fisher-Yates shuffle when rng is not NULL. */
void fed_data_order(size_t *order, size_t n, fed_rng *rng);
/* Copies rows idx[0..k) to x (k, dim) and y (k). */
void fed_data_gather(const fed_dataset *d, const size_t *idx, size_t k, float *x, int32_t *y);

typedef struct fed_augment {
    float noise_std; /* Gaussian noise added to every feature (tables and images) */
    size_t shift;    /* images: random translation by up to shift pixels in x and y,
                        zero fill (the "pad and random crop" of torchvision) */
    bool hflip;      /* images: mirror left-right with probability 1/2 */
} fed_augment;

/* true when a changes nothing (all zero). */
bool fed_augment_is_identity(const fed_augment *a);
/* Augments k examples of the given shape in place; scratch holds one example
 * (fed_shape_numel(shape) floats; unused without shift). shift and hflip need shape ndim
 * 3 (C, H, W). Per example the rng gives, in this order: dy then dx, each
 * fed_rng_below(2 * shift + 1) - shift (all channels move together); one fed_rng_u64
 * whose top bit decides the flip; then one fed_rng_normal per feature. */
void fed_augment_batch(float *x, size_t k, const fed_shape *shape, const fed_augment *a,
                       fed_rng *rng, float *scratch);

#endif
