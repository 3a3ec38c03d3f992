/* fedavg_replay: recomputes a federation's FedAvg from what the sites kept, outside the
 * coordinator, and compares it with the coordinator's exported model bit for bit.
 *
 *   fedavg_replay INITIAL.safetensors METRICS.jsonl FINAL.safetensors CN=DIR...
 *
 * For every round line of the coordinator's metrics file it folds, in the recorded
 * order ("accepted": [{"cn", "examples"}]), each site's own copy of the delta it sent
 * (DIR/round-NNNNNN.safetensors, written by `fedtune client --save-updates DIR`) into a
 * fresh aggregator, then applies the FedAvg server step tensor by tensor, exactly as
 * the coordinator does. The float sum depends on the order of the additions, which is
 * why the order is recorded; given it, the result must be identical to the last bit.
 * Exit 0 when FINAL's parameters equal the replay's, 1 with the first difference. */
#include "coordinator/aggregate.h"
#include "core/alloc.h"
#include "core/json.h"
#include "core/model.h"
#include "core/safetensors.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *what) {
    fprintf(stderr, "fedavg_replay: %s: %s\n", what, fed_errmsg());
    return 1;
}

/* Folds one site's saved delta for `round` into a slot of weight w. */
static fed_err fold(fed_agg *a, const fed_model *m, const char *dir, uint64_t round, float w) {
    char path[4096];
    snprintf(path, sizeof path, "%s/round-%06" PRIu64 ".safetensors", dir, round);
    fed_st_file *f = NULL;
    fed_err err = fed_st_read(&f, path);
    if (err) return err;
    fed_agg_slot slot;
    float *buf;
    if ((err = fed_agg_slot_open(a, &slot, w)) || (err = fed_agg_slot_buffer(a, slot, &buf))) {
        fed_st_close(&f);
        return err;
    }
    size_t off = 0;
    for (size_t i = 0; i < fed_model_num_tensors(m); i++) {
        const fed_tensor *t = fed_model_tensor(m, i);
        if (!t->trainable) continue;
        const fed_st_tensor *st = fed_st_find(f, t->name);
        if (!st || st->numel != t->numel) {
            fed_agg_slot_abort(a, slot);
            fed_st_close(&f);
            return fed_errorf(FED_EFORMAT, "%s: tensor %s missing or of another size", path,
                              t->name);
        }
        fed_st_copy_f32(f, st, buf + off);
        off += t->numel;
    }
    fed_st_close(&f);
    return fed_agg_slot_commit_buffer(a, slot, 0.0);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: fedavg_replay INITIAL METRICS.jsonl FINAL CN=DIR...\n");
        return 2;
    }
    fed_model *m = NULL, *final = NULL;
    if (fed_model_load(&m, argv[1], NULL)) return die(argv[1]);
    if (fed_model_load(&final, argv[3], NULL)) return die(argv[3]);
    size_t P = fed_model_num_trainable(m);
    fed_agg *a = NULL;
    fed_strategy *s = NULL;
    fed_strategy_config sc = fed_strategy_defaults(FED_STRATEGY_FEDAVG);
    if (fed_agg_new(&a, P, 1) || fed_strategy_new(&s, &sc, P)) return die("aggregator");
    FILE *mf = fopen(argv[2], "r");
    if (!mf) {
        fprintf(stderr, "fedavg_replay: cannot open %s\n", argv[2]);
        return 1;
    }
    fed_json_hooks();
    char line[1 << 16];
    size_t rounds = 0;
    while (fgets(line, sizeof line, mf)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "round");
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(j, "accepted");
        if (!cJSON_IsNumber(r) || !cJSON_IsArray(acc)) {
            fprintf(stderr, "fedavg_replay: %s: a line without round/accepted\n", argv[2]);
            return 1;
        }
        fed_agg_begin_round(a);
        for (const cJSON *e = acc->child; e; e = e->next) {
            const char *cn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "cn"));
            const cJSON *ex = cJSON_GetObjectItemCaseSensitive(e, "examples");
            const char *dir = NULL;
            for (int i = 4; i < argc && cn; i++) {
                size_t n = strlen(cn);
                if (strncmp(argv[i], cn, n) == 0 && argv[i][n] == '=') dir = argv[i] + n + 1;
            }
            if (!dir || !cJSON_IsNumber(ex)) {
                fprintf(stderr, "fedavg_replay: round %d: no folder for site %s\n",
                        (int)r->valuedouble, cn ? cn : "?");
                return 1;
            }
            if (fold(a, m, dir, (uint64_t)r->valuedouble, (float)ex->valuedouble)) return die(dir);
        }
        const float *mean;
        if (fed_agg_result(a, &mean)) return die("result");
        fed_strategy_apply_model(s, m, mean);
        fed_strategy_end_round(s);
        cJSON_Delete(j);
        rounds++;
    }
    fclose(mf);
    size_t n = fed_model_num_params(m);
    if (fed_model_num_params(final) != n) {
        fprintf(stderr, "fedavg_replay: the final model has another size\n");
        return 1;
    }
    const float *x = fed_model_params_const(m), *y = fed_model_params_const(final);
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&x[i], &y[i], sizeof x[i]) != 0) {
            printf("fedavg_replay: %zu rounds replayed; parameter %zu differs: replay %.9g, "
                   "coordinator %.9g\n",
                   rounds, i, (double)x[i], (double)y[i]);
            return 1;
        }
    }
    printf("fedavg_replay: %zu rounds replayed; all %zu parameters identical\n", rounds, n);
    fed_strategy_destroy(&s);
    fed_agg_destroy(&a);
    fed_model_destroy(&m);
    fed_model_destroy(&final);
    return 0;
}
