/* The fedtune executable: finds the subcommand and hands over. Installs the log
 * handler the libraries write through. No training, networking or parsing of its own. */
#include "cli/commands.h"
#include "cli/options.h"
#include "core/blas.h"
#include "core/log.h"
#include "net/channel.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"init", cmd_init, "write a freshly initialised model for an architecture"},
    {"pretrain", cmd_pretrain,
     "train a fresh model from --arch on (public) labeled data, or a language model on --text"},
    {"train", cmd_train, "fine-tune a model on labeled data (freeze, new head, early stopping)"},
    {"eval", cmd_eval, "evaluate a model: loss, accuracy, macro-F1, per-class, confusion"},
    {"tune", cmd_tune, "search learning rate, batch size and epochs on the validation split"},
    {"info", cmd_info, "show a model file: architecture, tensors, counts, metadata"},
    {"merge", cmd_merge, "fold a model's LoRA adapters into its weights"},
    {"import", cmd_import,
     "convert a published pre-trained model (USE-lite, TF.js) to a model file"},
    {"tokenizer", cmd_tokenizer, "tokenizer train|count|convert: learn a byte-level BPE from text"},
    {"generate", cmd_generate, "continue a prompt with a language model (greedy or sampled)"},
    {"embed", cmd_embed, "embed sentences (JSON lines) with a model that carries its tokenizer"},
    {"data", cmd_data, "data info FILE: label counts, imbalance, duplicates, constant features"},
    {"coordinator", cmd_coordinator,
     "run the federation's coordinator daemon (rounds, FedAvg, ...)"},
    {"client", cmd_client, "run a site's client beside its private labeled data"},
    {"relay", cmd_relay, "aggregate a group of sites for an upstream coordinator (a hierarchy)"},
    {"admin", cmd_admin,
     "status|pause|resume|stop|reload-crl|evict|readmit: act on the running coordinator"},
    {"sim", cmd_sim, "simulate a federation on this machine: N virtual sites, one data set"},
    {"demo", cmd_demo, "train a small network on a built-in synthetic task (no data needed)"},
};

/* Identical log lines in a row within this window are counted, not repeated. */
#define LOG_REPEAT_WINDOW_MS 10000

static bool log_json; /* --log-format json */
static cli_log_tap_fn log_tap;
static void *log_tap_user;

void cli_set_log_tap(cli_log_tap_fn fn, void *user) {
    log_tap = fn;
    log_tap_user = user;
}

/* s as a JSON string into f: quotes, backslashes and control characters escaped. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* One line on stderr: "TIME LEVEL: MESSAGE", or with --log-format json the same fields
 * as {"time":..., "level":..., "message":...} (one object a line, written at once so that
 * the lines of several threads do not mix). */
static void log_line(const char *level, const char *cmd, const char *line) {
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!log_json) {
        if (cmd)
            fprintf(stderr, "fedtune %s: %s\n", cmd, line);
        else
            fprintf(stderr, "%s %s: %s\n", stamp, level, line);
        return;
    }
    flockfile(stderr);
    fprintf(stderr, "{\"time\":\"%s\",\"level\":\"%s\",", stamp, level);
    if (cmd) {
        fputs("\"command\":", stderr);
        json_string(stderr, cmd);
        fputc(',', stderr);
    }
    fputs("\"message\":", stderr);
    json_string(stderr, line);
    fputs("}\n", stderr);
    funlockfile(stderr);
}

static void log_to_stderr(void *user, fed_log_level level, const char *line) {
    (void)user;
    log_line(fed_log_level_name(level), NULL, line);
    if (log_tap && level <= FED_LOG_WARN) log_tap(log_tap_user, level, line);
}

int cli_fail(const char *name, fed_err err) {
    log_line("error", name, fed_errdetail(err));
    return err == FED_EINVAL ? 2 : 1;
}

int cli_run(const opt_table *t, void *cfg, size_t size, int argc, char **argv,
            fed_err (*run)(const void *cfg)) {
    memset(cfg, 0, size);
    fed_err err = opt_parse(t, cfg, argc, argv);
    log_json = opt_log_json();
    if (err == FED_ECANCELED) {
        opt_release();
        return 0;
    }
    if (!err) err = run(cfg);
    opt_release();
    return err ? cli_fail(t->command, err) : 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: fedtune <command> [options]   (fedtune <command> --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n  --version    print the version and the BLAS in use\n"
               "  --help       show this help\n");
}

/* `fedtune --man`: fedtune(1); `fedtune --man COMMAND`: that command's page (the same
 * as `fedtune COMMAND --man`). Hidden: the build makes the manual with it. */
static int man(int argc, char **argv) {
    enum { N = sizeof commands / sizeof commands[0] };
    if (argc == 0) {
        const char *names[N], *summaries[N];
        for (size_t i = 0; i < N; i++) {
            names[i] = commands[i].name;
            summaries[i] = commands[i].summary;
        }
        opt_print_man_main(names, summaries, N);
        return 0;
    }
    for (size_t i = 0; argc == 1 && i < N; i++) {
        if (strcmp(argv[0], commands[i].name) != 0) continue;
        char flag[] = "--man";
        char *args[] = {flag, NULL};
        return commands[i].run(1, args);
    }
    if (argc == 1)
        fprintf(stderr, "fedtune --man: unknown command \"%s\" (see fedtune --help)\n", argv[0]);
    else
        fprintf(stderr, "fedtune --man: takes at most one command name\n");
    return 2;
}

int main(int argc, char **argv) {
    fed_log_set_handler(log_to_stderr, NULL, FED_LOG_INFO);
    /* A daemon whose rounds keep failing must not fill the disk with one line. */
    fed_log_set_repeat_window(LOG_REPEAT_WINDOW_MS);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--man") == 0) return man(argc - 2, argv + 2);
    if (strcmp(argv[1], "--version") == 0) {
        printf("fedtune %s\n%s\n", FED_VERSION, fed_blas_config());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        int rc = commands[i].run(argc - 2, argv + 2);
        fed_log_flush();
        return rc;
    }
    fprintf(stderr, "fedtune: unknown command \"%s\" (see fedtune --help)\n", argv[1]);
    return 2;
}

fed_err cli_check_channel(const char *const flags[5], const char *endpoint, bool server,
                          const fed_net_tls *tls, bool site) {
    const char *name = flags[0];
    fed_net_file which = FED_NET_FILE_NONE;
    if (fed_net_check_endpoint(endpoint, server) == FED_OK) {
        if (fed_net_check_tls(tls, server, &which) == FED_OK) {
            fed_net_role role = FED_NET_ROLE_SITE;
            if (site && fed_net_cert_role(tls->cert_file, &role) != FED_OK) fed_errclear();
            if (role == FED_NET_ROLE_SITE) return FED_OK;
            return fed_errorf(FED_EINVAL,
                              "%s %s: an admin's certificate (fedtune-certs admin), not a "
                              "site's: the coordinator refuses it as a site; use it with "
                              "fedtune admin",
                              flags[2], tls->cert_file);
        }
        name = flags[which];
    }
    char why[512];
    snprintf(why, sizeof why, "%s", fed_errmsg());
    return fed_errorf(FED_EINVAL, "%s %s", name, why);
}
