/* `fedtune data info FILE`: what a labeled data file holds and what is wrong with it
 * before any training: shape, label counts, class imbalance, duplicate and conflicting
 * rows, constant features, and what the missing-value policy did. */
#include "cli/commands.h"
#include "cli/prep.h"

#include <stdio.h>
#include <string.h>

typedef struct data_info_cfg {
    const char *data; /* labeled data file */
    data_cfg dc;      /* how to read it */
} data_info_cfg;

#define F(field) offsetof(data_info_cfg, field)
static const opt_spec data_info_opts[] = {
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data), "labeled data (CSV, sklearn CSV, IDX)"},
    DATA_OPTS(F(dc)),
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table data_info_table = {
    "data info",
    "Report on a labeled data file: size, label counts, imbalance, duplicates, conflicts, "
    "constant features.",
    data_info_opts, "data"};

static fed_err run_info(const void *cfg) {
    const data_info_cfg *c = cfg;
    if (!c->data) return fed_errorf(FED_EINVAL, "a data file is required (fedtune data info FILE)");
    fed_dataset *d = NULL;
    fed_data_report r;
    memset(&r, 0, sizeof r);
    fed_err err = prep_load(&d, c->data, &c->dc, NULL);
    if (!err) err = fed_data_report_new(&r, d);
    if (err) goto done;
    printf("data %s\n", c->data);
    printf("examples %zu, features %zu", d->n, d->dim);
    if (d->shape.ndim == 3)
        printf(" (images %zu x %zu x %zu)", d->shape.d[0], d->shape.d[1], d->shape.d[2]);
    printf(", classes %zu\n", d->num_classes);
    printf("rows read %zu, dropped (missing values) %zu, cells imputed %zu\n", d->stats.rows_read,
           d->stats.rows_dropped, d->stats.cells_imputed);
    printf("duplicate rows %zu, conflicting rows (same features, other label) %zu\n", r.duplicates,
           r.conflicts);
    printf("constant features %zu\n", r.constant_features);
    printf("class imbalance (largest / smallest class) %.2f", r.imbalance);
    if (r.empty_classes) printf(", %zu classes without examples", r.empty_classes);
    printf("\n\n%-20s %8s %7s\n", "class", "count", "share");
    for (size_t k = 0; k < d->num_classes; k++) {
        char buf[32];
        const char *name = d->class_names ? d->class_names[k] : buf;
        if (!d->class_names) snprintf(buf, sizeof buf, "%zu", k);
        printf("%-20.20s %8zu %6.2f%%\n", name, r.class_counts[k],
               d->n ? 100.0 * (double)r.class_counts[k] / (double)d->n : 0.0);
    }
done:
    fed_data_report_free(&r);
    fed_data_destroy(&d);
    return err;
}

int cmd_data(int argc, char **argv) {
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fprintf(argc < 1 ? stderr : stdout,
                "usage: fedtune data info [options] FILE   (fedtune data info --help)\n");
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "info") != 0) {
        fprintf(stderr, "fedtune data: unknown subcommand \"%s\" (try: fedtune data info FILE)\n",
                argv[0]);
        return 2;
    }
    data_info_cfg c;
    return cli_run(&data_info_table, &c, sizeof c, argc - 1, argv + 1, run_info);
}
