/* `fedtune client`: a site of the federation. Reads the kit's client.ini (section
 * [client]) and flags of the same names, turns them into a fed_site_config, and runs the
 * site (client/client.h) until the coordinator says Bye (exit 0) or SIGINT/SIGTERM asks
 * it to stop (it says Bye, exit 0). Before anything starts, the endpoint and the TLS
 * files are checked (net/channel.h) and a mistake is a usage error naming the option,
 * the value and what is wrong (exit 2), never a retry loop; a coordinator that refuses
 * this site's certificate ends the run with exit 1 and its reason. Logs go to stderr
 * through the handler fedtune.c installs. File names are used as given: relative ones
 * are relative to the current folder, so run it from the kit folder as the kit's README
 * says. */
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/prep.h"
#include "client/client.h"
#include "core/alloc.h"
#include "core/log.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct client_cfg {
    const char *coordinator;  /* the coordinator's endpoint */
    const char *server_name;  /* name its certificate must carry */
    const char *ca;           /* federation CA certificate */
    const char *cert;         /* this site's certificate */
    const char *key;          /* its private key */
    const char *crl;          /* CRL to check the coordinator against, or NULL */
    const char *data;         /* this site's labeled data */
    const char *format;       /* auto | csv | sklearn | idx */
    const char *label;        /* CSV label column */
    const char *header;       /* auto | yes | no */
    const char *missing;      /* error | drop | mean */
    const char *classes;      /* class names in id order, comma-separated, or NULL */
    const char *tokenizer;    /* text data: the published model file or a vocabulary */
    size_t text_length;       /* text data: token ids per example (T) with a vocabulary */
    int drop_empty;           /* text data: drop empty texts instead of failing */
    double test_split;        /* share held out for federated evaluation */
    long seed;                /* split seed */
    const char *standardize;  /* auto | off */
    size_t threads;           /* OpenBLAS threads */
    size_t max_epochs;        /* local cap on epochs, 0 = none */
    size_t max_batch;         /* local cap on the batch, 0 = none */
    const char *save_updates; /* audit folder for every update sent */
    const char *base_cache;   /* folder of the frozen bases received */
    const char *state_dir;    /* folder of the uplink codec's residual */
    double reconnect_initial; /* seconds */
    double reconnect_max;     /* seconds */
    double reconnect_jitter;  /* share of a delay cut off at random */
} client_cfg;

#define F(field) offsetof(client_cfg, field)
static const opt_spec client_opts[] = {
    {"coordinator", OPT_STRING, NULL, 1, 0, NULL, F(coordinator),
     "the coordinator's address (ZeroMQ endpoint): tcp://HOST:PORT, PORT 1..65535"},
    {"server-name", OPT_STRING, NULL, 1, 0, NULL, F(server_name),
     "the name the coordinator's certificate must carry (checked at every connection)"},
    {"ca", OPT_STRING, NULL, 1, 0, NULL, F(ca),
     "the federation CA certificate: only a coordinator it certified is accepted"},
    {"cert", OPT_STRING, NULL, 1, 0, NULL, F(cert), "this site's certificate (PEM)"},
    {"key", OPT_STRING, NULL, 1, 0, NULL, F(key), "this site's private key (PEM, mode 0600)"},
    {"data", OPT_STRING, NULL, 1, 0, NULL, F(data),
     "this site's labeled data (CSV, sklearn CSV, IDX; may be gzipped); it never leaves the "
     "site"},
    {"crl", OPT_STRING, NULL, 1, 0, NULL, F(crl),
     "certificate revocation list to check the coordinator against (optional)"},
    {"label", OPT_STRING, NULL, 1, 0, NULL, F(label),
     "CSV label column: header name or 0-based index, -1 = last [last]"},
    {"format", OPT_CHOICE, "auto", 1, 0, "auto|csv|sklearn|idx", F(format),
     "data file format (auto: by content)"},
    {"header", OPT_CHOICE, "auto", 1, 0, "auto|yes|no", F(header), "CSV first row is a header"},
    {"missing", OPT_CHOICE, "error", 1, 0, "error|drop|mean", F(missing),
     "empty/NA feature cells: fail, drop the row, or use the column mean"},
    {"classes", OPT_LIST, NULL, 1, 0, NULL, F(classes),
     "class names in id order, comma-separated, so that every site gives a name the same id "
     "(default: the names in the data, sorted; integer labels are ids)"},
    {"tokenizer", OPT_STRING, NULL, 1, 0, NULL, F(tokenizer),
     "text data (JSON lines, or CSV with a text column): the federation's published "
     "pre-trained model file (.safetensors: its tokenizer and input length), or a vocabulary "
     "(USE-lite's vocab.json or fedtune's JSON form) with --text-length"},
    {"text-length", OPT_SIZE, "0", 0, 65536, NULL, F(text_length),
     "text data: token ids per example, the model's input length (0: from the --tokenizer "
     "model file); a model of another length refuses this site's data every round"},
    {"drop-empty", OPT_BOOL, "false", 1, 0, NULL, F(drop_empty),
     "text data: drop rows whose text is empty (counted) instead of failing"},
    {"test-split", OPT_FLOAT, "0.2", 0, 0.9, NULL, F(test_split),
     "share of the data held out to evaluate the global model each round (stratified)"},
    {"seed", OPT_INT, "1", 0, 9007199254740991.0, NULL, F(seed), "seed of the train/test split"},
    {"standardize", OPT_CHOICE, "auto", 1, 0, "auto|off", F(standardize),
     "auto: scale features by mean/std fitted on the local training split; off: use the data "
     "as they are"},
    {"threads", OPT_SIZE, "1", 1, 256, NULL, F(threads), "OpenBLAS threads"},
    {"max-epochs", OPT_SIZE, "0", 0, 100000, NULL, F(max_epochs),
     "local cap on the epochs a round asks for; 0 = none"},
    {"max-batch", OPT_SIZE, "0", 0, 65536, NULL, F(max_batch),
     "local cap on the batch size a round asks for (low-memory sites); 0 = none"},
    {"save-updates", OPT_STRING, NULL, 1, 0, NULL, F(save_updates),
     "keep a copy of every update this site sends (round-N.safetensors) in this folder"},
    {"base-cache", OPT_STRING, NULL, 1, 0, NULL, F(base_cache),
     "keep the frozen part of the model (the pre-trained base under adapters or a new head) in "
     "this folder, so that after it arrived once, even across restarts, only trainable tensors "
     "are sent (default: in memory, for this process)"},
    {"state-dir", OPT_STRING, NULL, 1, 0, NULL, F(state_dir),
     "keep the site's state in this folder across restarts: the error-feedback residual of "
     "the uplink codec the coordinator's --compress asks for (default: in memory)"},
    {"reconnect-initial", OPT_FLOAT, "1", 0.01, 3600, NULL, F(reconnect_initial),
     "seconds before the first reconnect attempt; doubles after each failure"},
    {"reconnect-max", OPT_FLOAT, "60", 0.01, 86400, NULL, F(reconnect_max),
     "longest wait between reconnect attempts, seconds"},
    {"reconnect-jitter", OPT_FLOAT, "0.5", 0, 1, NULL, F(reconnect_jitter),
     "share of each wait cut off at random, so sites do not reconnect in step"},
    {NULL, OPT_INT, NULL, 0, 0, NULL, 0, NULL},
};
#undef F

static const opt_table client_table = {
    "client",
    "Take part in federated rounds as a site: train on local data, send only weight deltas.",
    client_opts, NULL};

/* Set by SIGINT/SIGTERM; fed_site_run looks at it. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static fed_err required(const char *value, const char *key) {
    if (value && value[0]) return FED_OK;
    return fed_errorf(FED_EINVAL, "--%s is required (or %s = ... in client.ini)", key, key);
}

static const char *const client_flags[5] = {"--coordinator", "--ca", "--cert", "--key", "--crl"};

/* A vocabulary file (JSON, maybe gzipped) rather than a model file (safetensors: an
 * 8-byte header length first): by the first byte that is not white space. */
static bool is_vocabulary(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false; /* the model reader says why */
    int ch;
    while ((ch = fgetc(f)) == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
    }
    fclose(f);
    return ch == '[' || ch == '{' || ch == 0x1f;
}

/* --tokenizer and the input length: from a model file (its metadata's tokenizer and its
 * input shape [T]), or a vocabulary file and --text-length. */
static fed_err open_tokenizer(const client_cfg *c, prep_text *pt) {
    memset(pt, 0, sizeof *pt);
    if (is_vocabulary(c->tokenizer)) {
        if (!c->text_length)
            return fed_errorf(FED_EINVAL,
                              "--tokenizer %s is a vocabulary: give --text-length (the model's "
                              "input length), or the model file instead",
                              c->tokenizer);
        pt->len = c->text_length;
        fed_err err = fed_tokenizer_load(&pt->tok, c->tokenizer);
        return err ? fed_errprefix(err, "--tokenizer") : FED_OK;
    }
    fed_st_file *f = NULL;
    fed_arch *a = NULL;
    fed_err err = fed_st_read(&f, c->tokenizer);
    if (err) return fed_errprefix(err, "--tokenizer");
    const fed_meta *meta = fed_st_meta(f);
    const char *js = fed_meta_get(meta, META_TOKENIZER), *spec = fed_meta_get(meta, FED_META_ARCH);
    if (!js || !spec) {
        err = fed_errorf(FED_EINVAL, "--tokenizer %s: no %s in its metadata", c->tokenizer,
                         js ? FED_META_ARCH : META_TOKENIZER);
        goto done;
    }
    if ((err = fed_arch_parse(&a, spec))) goto done;
    fed_shape in = fed_arch_input_shape(a);
    pt->len = in.ndim == 1 ? in.d[0] : 0;
    pt->lm_model = fed_arch_is_lm(a);
    if (pt->len == 0) {
        err = fed_errorf(FED_EINVAL, "--tokenizer %s: its input is not one sequence of token ids",
                         c->tokenizer);
        goto done;
    }
    if (c->text_length && c->text_length != pt->len) {
        err = fed_errorf(FED_EINVAL, "--text-length %zu: the model %s reads %zu token ids",
                         c->text_length, c->tokenizer, pt->len);
        goto done;
    }
    err = fed_tokenizer_parse(&pt->tok, js, strlen(js), "--tokenizer metadata " META_TOKENIZER);
done:
    fed_arch_destroy(&a);
    fed_st_close(&f);
    return err;
}

/* Text data: tokenized here into *d (the site gets them in memory, never standardised);
 * *d stays NULL for other data, which the site loads itself. */
static fed_err load_text(const client_cfg *c, fed_dataset **d, uint8_t tok_sha[32]) {
    *d = NULL;
    bool text = false;
    fed_err err = fed_text_sniff(c->data, &text);
    if (err) return err;
    prep_text pt;
    memset(&pt, 0, sizeof pt);
    if (c->tokenizer && (err = open_tokenizer(c, &pt))) {
        prep_text_close(&pt);
        return err;
    }
    if (!text && !(pt.lm_model && prep_is_plain_text(c->data))) { /* an LM: *.txt too */
        prep_text_close(&pt);
        return c->tokenizer ? fed_errorf(FED_EINVAL,
                                         "--tokenizer: %s is not text data (JSON lines, or CSV "
                                         "with a \"text\" column)",
                                         c->data)
                            : FED_OK;
    }
    if (!c->tokenizer)
        return fed_errorf(FED_EINVAL,
                          "--data %s is text data: give --tokenizer (the federation's model "
                          "file, or a vocabulary with --text-length)",
                          c->data);
    data_cfg dc;
    memset(&dc, 0, sizeof dc);
    dc.format = c->format;
    dc.label = c->label;
    dc.header = c->header;
    dc.missing = c->missing;
    dc.drop_empty = c->drop_empty;
    dc.classes = c->classes;
    err = prep_load_data(d, c->data, &dc, NULL, &pt);
    if (!err && (err = prep_tokenizer_sha(pt.tok, tok_sha))) fed_data_destroy(d);
    if (!err && pt.lm)
        FED_LOG(FED_LOG_INFO,
                "client: %s: language-model text, %zu documents, %zu tokens: %zu windows of %zu "
                "token ids",
                c->data, pt.lm_stats.documents, pt.lm_stats.tokens, pt.lm_stats.windows, pt.len);
    else if (!err)
        FED_LOG(FED_LOG_INFO,
                "client: %s: text, %zu texts (%zu empty dropped), %zu token ids each, %.2f%% "
                "unknown tokens, %zu truncated",
                c->data, pt.stats.rows, pt.stats.dropped_empty, pt.len,
                pt.stats.tokens ? 100.0 * (double)pt.stats.unknown / (double)pt.stats.tokens : 0.0,
                pt.stats.truncated);
    prep_text_close(&pt);
    return err;
}

static fed_err run_client(const void *cfg) {
    const client_cfg *c = cfg;
    fed_err err;
    if ((err = required(c->coordinator, "coordinator"))) return err;
    if ((err = required(c->server_name, "server-name"))) return err;
    if ((err = required(c->ca, "ca"))) return err;
    if ((err = required(c->cert, "cert"))) return err;
    if ((err = required(c->key, "key"))) return err;
    if ((err = required(c->data, "data"))) return err;
    if (c->reconnect_max < c->reconnect_initial)
        return fed_errorf(FED_EINVAL, "--reconnect-max %g is below --reconnect-initial %g",
                          c->reconnect_max, c->reconnect_initial);

    fed_site_config sc = fed_site_default_config();
    sc.coordinator = c->coordinator;
    sc.server_name = c->server_name;
    sc.net.tls.ca_file = c->ca;
    sc.net.tls.cert_file = c->cert;
    sc.net.tls.key_file = c->key;
    sc.net.tls.crl_file = c->crl;
    if ((err = cli_check_channel(client_flags, c->coordinator, false, &sc.net.tls, true)))
        return err;
    fed_dataset *text = NULL;
    uint8_t tok_sha[32];
    if ((err = load_text(c, &text, tok_sha))) return err;
    sc.data = text ? NULL : c->data;
    sc.dataset = text;
    sc.tokenizer_sha256 = text ? tok_sha : NULL;
    sc.data_opts.format = strcmp(c->format, "csv") == 0       ? FED_FORMAT_CSV
                          : strcmp(c->format, "sklearn") == 0 ? FED_FORMAT_SKLEARN
                          : strcmp(c->format, "idx") == 0     ? FED_FORMAT_IDX
                                                              : FED_FORMAT_AUTO;
    sc.data_opts.header = strcmp(c->header, "yes") == 0  ? FED_HEADER_YES
                          : strcmp(c->header, "no") == 0 ? FED_HEADER_NO
                                                         : FED_HEADER_AUTO;
    sc.data_opts.missing = strcmp(c->missing, "drop") == 0   ? FED_MISSING_DROP
                           : strcmp(c->missing, "mean") == 0 ? FED_MISSING_MEAN
                                                             : FED_MISSING_ERROR;
    sc.data_opts.label = c->label;
    char **classes = NULL;
    size_t nclasses = 0;
    if (c->classes && (err = fed_data_split_names(c->classes, "--classes", &classes, &nclasses))) {
        fed_data_destroy(&text);
        return err;
    }
    sc.data_opts.classes = (const char *const *)classes;
    sc.data_opts.num_classes = nclasses;
    sc.test_split = c->test_split;
    sc.seed = (uint64_t)c->seed;
    sc.standardize = !text && strcmp(c->standardize, "off") != 0; /* token ids: never */
    sc.threads = c->threads;
    sc.max_epochs = c->max_epochs;
    sc.max_batch = c->max_batch;
    sc.save_updates = c->save_updates;
    sc.state_dir = c->state_dir;
    sc.backoff_initial_ms = (int)(c->reconnect_initial * 1000.0 + 0.5);
    sc.backoff_max_ms = (int)(c->reconnect_max * 1000.0 + 0.5);
    sc.backoff_jitter = c->reconnect_jitter;

    fed_base_cache *bases = NULL; /* checked before the data are read */
    if ((err = fed_base_cache_new(&bases, c->base_cache))) {
        fed_free(classes);
        char why[512];
        snprintf(why, sizeof why, "%s", fed_errmsg());
        return fed_errorf(FED_EINVAL, "--base-cache %s", why);
    }
    sc.base_cache = bases;
    fed_site *site = NULL;
    err = fed_site_new(&site, &sc);
    fed_free(classes);
    fed_data_destroy(&text);
    if (err == FED_EIO && strncmp(c->data, "/path/to/your/", 14) == 0)
        err = fed_errprefix(err, "edit \"data =\" in client.ini to point at this site's data");
    if (err) {
        fed_base_cache_destroy(&bases);
        return err;
    }

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    stop_requested = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    err = fed_site_run(site, &stop_requested);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    if (err) {
        err = fed_errorf(err, "%s", fed_site_errmsg(site));
    } else {
        fed_site_stats st;
        fed_site_stats_get(site, &st);
        FED_LOG(FED_LOG_INFO,
                "client: %s after %" PRIu64 " rounds (%" PRIu64 " failed, %" PRIu64
                " dropped); model version %" PRIu64 "; models received: %" PRIu64 " full, %" PRIu64
                " trainable-only, %" PRIu64 " deltas, %" PRIu64 " bytes",
                st.bye ? "the coordinator ended the federation" : "stopped", st.rounds_done,
                fed_site_stats_failed(&st), st.rounds_dropped, st.model_version, st.models_full,
                st.models_trainable, st.models_delta, st.model_bytes);
    }
    fed_site_destroy(&site);
    fed_base_cache_destroy(&bases);
    return err;
}

int cmd_client(int argc, char **argv) {
    client_cfg c;
    return cli_run(&client_table, &c, sizeof c, argc, argv, run_client);
}
