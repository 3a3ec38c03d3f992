/* libFuzzer target for the architecture parser: any bytes either parse into an
 * architecture whose canonical JSON parses back to the same JSON and builds a model,
 * or fail with FED_EFORMAT / FED_ESHAPE / FED_ERANGE. Never a crash, never a huge
 * allocation (models above 1 << 22 parameters are not instantiated here). */
#include "core/alloc.h"
#include "core/arch.h"
#include "core/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fed_arch *a = NULL, *b = NULL;
    fed_err err = fed_arch_parse(&a, text);
    if (err == FED_OK) {
        char *json = NULL, *json2 = NULL;
        if (fed_arch_to_json(a, &json) != FED_OK) abort();
        if (fed_arch_parse(&b, json) != FED_OK) abort();
        if (fed_arch_to_json(b, &json2) != FED_OK || strcmp(json, json2) != 0) abort();
        if (fed_arch_num_params(a) <= ((size_t)1 << 22)) {
            fed_model *m = NULL;
            if (fed_model_new(&m, a) != FED_OK) abort();
            if (fed_model_num_params(m) != fed_arch_num_params(a)) abort();
            fed_model_init(m, 1);
            fed_model_destroy(&m);
        }
        fed_free(json);
        fed_free(json2);
    } else if (err != FED_EFORMAT && err != FED_ESHAPE && err != FED_ERANGE) {
        abort();
    }
    fed_arch_destroy(&a);
    fed_arch_destroy(&b);
    free(text);
    return 0;
}
