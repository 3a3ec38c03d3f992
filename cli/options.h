/* Command options from one table: each subcommand describes its options once (name,
 * type, default, range, help, where the value goes) and this module derives from that
 * table the defaults, the validation, `--help`, the INI config file reader and the
 * sample config printed by `--print-config` (committed under examples/).
 *
 * Flags are `--name value`, `--name=value`, and `--name` / `--no-name` for booleans.
 * `--config FILE` reads `name = value` lines (in the section named after the
 * subcommand, or before any section); flags given on the command line win over the
 * file, the file wins over defaults. Errors name the flag, or the file and line.
 * A table may name one option that a single bare argument also sets (`fedtune info
 * m.safetensors` = `fedtune info --model m.safetensors`). */
#ifndef FED_CLI_OPTIONS_H
#define FED_CLI_OPTIONS_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum opt_type {
    OPT_INT,         /* long, stored in a long */
    OPT_SIZE,        /* non-negative count, stored in a size_t */
    OPT_FLOAT,       /* stored in a double */
    OPT_FLOAT_ABOVE, /* a double above min (min itself is refused): the range (min, max] */
    OPT_BOOL,        /* stored in an int (0/1) */
    OPT_STRING,      /* stored in a const char * (points into argv, the file copy, or def) */
    OPT_CHOICE,      /* one of choices ("a|b|c"), stored as a const char * */
    OPT_LIST,        /* repeatable text: every occurrence (file and flags alike) is appended,
                        comma-separated, to one const char * (NULL when never given) */
} opt_type;

typedef struct opt_spec {
    const char *name;    /* flag without "--", also the INI key */
    opt_type type;       /* how to parse and store */
    const char *def;     /* default as text; NULL: no default (string options only) */
    double min, max;     /* numeric range, inclusive (ignored when min > max) */
    const char *choices; /* OPT_CHOICE: "sgd|adam|adamw" */
    size_t offset;       /* where the value goes: offsetof(config struct, field) */
    const char *help;    /* one line for --help and the sample config */
} opt_spec;

/* A subcommand's options; the table ends with an entry whose name is NULL. */
typedef struct opt_table {
    const char *command; /* "demo": the INI section and the usage line */
    const char *summary; /* one line for `fedtune --help` */
    const opt_spec *opts;
    const char *positional; /* option a bare argument sets ("model" for `info M`), or NULL */
} opt_table;

/* Fills cfg from defaults, then --config FILE, then the other flags of argv[0..argc)
 * (the arguments after the subcommand). Returns FED_OK, FED_EINVAL with a one-line
 * detail in fed_errmsg(), or FED_ECANCELED when --help, --print-config or --man was
 * handled (the text went to stdout). Strings stay valid until opt_release(). */
fed_err opt_parse(const opt_table *t, void *cfg, int argc, char **argv) FED_MUST_USE;
/* Frees the text kept from a config file. */
void opt_release(void);
/* Whether the last opt_parse saw --log-format json (every command takes it, like
 * --config: log lines on stderr become one JSON object each; see cli/fedtune.c). */
bool opt_log_json(void);

/* The word --help and the manual pages show for an option's value: "N", "X", "TEXT", the
 * choices "a|b|c", or "" for a boolean. */
const char *opt_value_word(const opt_spec *o);
/* Writes the --help text of t. */
void opt_print_help(const opt_table *t);
/* Writes the sample INI file of t: every key, its default and its help. */
void opt_print_config(const opt_table *t);

/* Writes the manual page fedtune-<page>(1) in roff (cli/man.c): NAME (summary), SYNOPSIS,
 * DESCRIPTION, every option of the n tables with its type, range or choices, default
 * and help, EXIT STATUS, FILES, SEE ALSO. A command with subcommands (`fedtune data
 * info|tokenize`) passes one table per subcommand. `fedtune <command> --man` prints it
 * (a hidden flag, for the build: packaging/gen-man.sh). */
void opt_print_man(const char *page, const char *summary, const opt_table *const *tables, size_t n);
/* Writes fedtune(1): the n commands with their one-line summaries. */
void opt_print_man_main(const char *const *names, const char *const *summaries, size_t n);

#endif
