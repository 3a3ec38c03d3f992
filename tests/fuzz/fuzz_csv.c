/* libFuzzer target for the CSV and sklearn parsers. The first byte picks the options
 * (format, header, missing policy, label column), the second the delimiter and whether
 * classes are given; the rest is the text. Any input either parses into a consistent
 * data set (finite features, ids below num_classes, stats that add up), which the report,
 * split and standardizer then accept, or fails with FED_EFORMAT / FED_ERANGE /
 * FED_EINVAL and a message. Never a crash, never a huge allocation. */
#include "core/alloc.h"
#include "dataset/dataset.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const fed_dataset *d) {
    fed_data_report r;
    if (fed_data_report_new(&r, d) != FED_OK) abort();
    size_t total = 0;
    for (size_t c = 0; c < r.num_classes; c++) total += r.class_counts[c];
    if (total != d->n || r.nonfinite != 0 || r.duplicates + r.conflicts >= d->n) abort();
    fed_data_report_free(&r);
    fed_dataset *tr = NULL, *va = NULL, *te = NULL;
    if (fed_data_split(d, 0.2, 0.2, 1, &tr, &va, &te) != FED_OK) abort();
    if (tr->n + va->n + te->n != d->n || tr->n == 0) abort();
    fed_standardizer *s = NULL, *s2 = NULL;
    char *json = NULL;
    if (fed_std_fit(&s, tr) != FED_OK || fed_std_apply(s, te) != FED_OK) abort();
    if (fed_std_to_json(s, &json) != FED_OK || fed_std_from_json(&s2, json) != FED_OK) abort();
    if (memcmp(s->mean, s2->mean, s->len * sizeof(float)) != 0) abort();
    fed_free(json);
    fed_std_destroy(&s);
    fed_std_destroy(&s2);
    fed_data_destroy(&tr);
    fed_data_destroy(&va);
    fed_data_destroy(&te);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *labels[] = {NULL, "0", "-1", "b"};
    static const char delims[] = {',', ';', '\t', ' '};
    static const char *const classes[] = {"a", "b", "1", "setosa"};
    if (size < 2) return 0;
    fed_csv_options o = {
        .format = (fed_data_format)((data[0] & 3) == 3 ? 0 : data[0] & 3),
        .header = (fed_csv_header)((data[0] >> 2 & 3) == 3 ? 0 : data[0] >> 2 & 3),
        .missing = (fed_missing_policy)((data[0] >> 4 & 3) == 3 ? 2 : data[0] >> 4 & 3),
        .label = labels[data[0] >> 6],
        .delimiter = delims[data[1] & 3],
    };
    if (data[1] & 4) {
        o.classes = classes;
        o.num_classes = 4;
    }
    const char *text = (const char *)data + 2;
    size_t len = size - 2;
    fed_dataset *d = NULL;
    fed_err err = fed_data_parse_csv(&d, text, len, "fuzz.csv", &o);
    if (err == FED_OK) {
        if (!d || d->n == 0 || d->dim == 0 || d->num_classes == 0) abort();
        if (d->shape.ndim != 1 || d->shape.d[0] != d->dim) abort();
        if (d->stats.rows_read != d->n + d->stats.rows_dropped) abort();
        for (size_t i = 0; i < d->n * d->dim; i++)
            if (!isfinite(d->x[i])) abort();
        for (size_t i = 0; i < d->n; i++)
            if (d->y[i] < 0 || (size_t)d->y[i] >= d->num_classes) abort();
        for (size_t c = 0; d->class_names && c < d->num_classes; c++)
            if (!d->class_names[c]) abort();
        exercise(d);
        fed_data_destroy(&d);
    } else {
        if (d) abort();
        if (err != FED_EFORMAT && err != FED_ERANGE && err != FED_EINVAL) abort();
        if (!fed_errmsg()[0]) abort();
    }
    return 0;
}
