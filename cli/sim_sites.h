/* `fedtune sim --sites FILE`: a federation of natural sites, each a data file of its own
 * (the sentiment sources imdb, yelp, amazon; the writers of a corpus). The TSV lists one
 * site a line, name<TAB>training data[<TAB>held-out test data], relative paths against
 * the TSV's folder, blank lines and #-comments ignored. Each line's training rows go
 * together into one pooled set and become one virtual site, or --site-split K sites
 * (name-1 .. name-K) dealt out by the usual partition; a line's test file is the
 * federated-evaluation set of each of its sites. What does not live here: the simulator
 * (sim/) and the data loaders (cli/prep.c). */
#ifndef FED_CLI_SIM_SITES_H
#define FED_CLI_SIM_SITES_H

#include "cli/prep.h"
#include "sim/partition.h"

/* The sites of a --sites file, ready for fed_sim_config. */
typedef struct sim_sites {
    size_t n;            /* virtual sites */
    char **names;        /* (n) their names */
    fed_dataset *train;  /* every line's training rows, line after line */
    fed_partition *part; /* (n sites) indices into train */
    fed_dataset **tests; /* (n) a site's test set (borrowed from owned) or NULL */
    size_t lines;        /* sites' lines in the file */
    fed_dataset **owned; /* (lines) each line's test set, or NULL */
    char *classes;       /* class names of the pooled data (JSON), or NULL */
} sim_sites;

/* How to read the files: the data options, the model's classes and metadata (its input
 * standardisation is applied) and the text state (tokenizer, T). */
typedef struct sim_sites_read {
    const data_cfg *dc;
    const char *classes;
    const fed_meta *meta;
    prep_text *pt;
} sim_sites_read;

/* Reads the TSV at path and its data files; split K >= 1 sites per line, dealt by pc
 * (clients and seed are set per line). Errors name path:line (and the data file's own
 * line through its loader). On error *ss is cleared. */
fed_err sim_sites_load(sim_sites *ss, const char *path, size_t split, const fed_part_config *pc,
                       const sim_sites_read *rd) FED_MUST_USE;
void sim_sites_free(sim_sites *ss);

#endif
