/* The subcommands of the fedtune executable. Each takes the arguments after its name
 * and returns the process exit status: 0 success, 1 failure at run time, 2 bad usage.
 * Each prints one clear line on stderr when it fails. */
#ifndef FED_CLI_COMMANDS_H
#define FED_CLI_COMMANDS_H

#include "core/err.h"

/* Exit status for an error: 2 for bad usage (options), 1 otherwise. */
int cli_fail(const char *name, fed_err err);

int cmd_demo(int argc, char **argv);

#endif
