/* The subcommands of the fedtune executable. Each takes the arguments after its name
 * and returns the process exit status: 0 success, 1 failure at run time, 2 bad usage.
 * Each prints one clear line on stderr when it fails. */
#ifndef FED_CLI_COMMANDS_H
#define FED_CLI_COMMANDS_H

#include "core/err.h"
#include "core/log.h"

#include <stdbool.h>

#include <stddef.h>

/* Exit status for an error: 2 for bad usage (options), 1 otherwise. */
int cli_fail(const char *name, fed_err err);

/* Called with every warn and error line the log handler passes on (any thread; the
 * coordinator's status page keeps the last ones); NULL: none. Set it before the threads
 * that log start, clear it after they stop. */
typedef void (*cli_log_tap_fn)(void *user, fed_log_level level, const char *line);
void cli_set_log_tap(cli_log_tap_fn fn, void *user);

struct opt_table;
/* The body of every subcommand: zeroes cfg (size bytes), parses argv with t into it
 * (flags, --config, --help), calls run(cfg) and returns the exit status, printing the
 * one-line error on failure. */
int cli_run(const struct opt_table *t, void *cfg, size_t size, int argc, char **argv,
            fed_err (*run)(const void *cfg));

int cmd_demo(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_coordinator(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_relay(int argc, char **argv);
int cmd_admin(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_generate(int argc, char **argv);

/* The channel's start-up checks (fed_net_check_endpoint, fed_net_check_tls) of an
 * endpoint and its TLS files, the detail prefixed with the option at fault: "--cert /tmp:
 * is a directory, not a PEM certificate". flags names the options of the endpoint, the CA,
 * the certificate, the key and the CRL, in that order ({"--listen", "--ca", "--cert",
 * "--key", "--crl"}); server: the coordinator's side. With site, an admin's certificate
 * (fedtune-certs admin) is refused too: the coordinator would refuse it as a site. */
struct fed_net_tls;
fed_err cli_check_channel(const char *const flags[5], const char *endpoint, bool server,
                          const struct fed_net_tls *tls, bool site) FED_MUST_USE;

/* Parses --arch: a preset, JSON text, or @FILE holding JSON. */
struct fed_arch;
fed_err cli_read_arch(struct fed_arch **out, const char *spec) FED_MUST_USE;

#endif
