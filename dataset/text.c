/* Text classification data (see text.h). */
#include "dataset/text.h"
#include "core/alloc.h"
#include "core/json.h"
#include "dataset/data_internal.h"

#include <cJSON.h>
#include <string.h>

fed_err fed_text_json_string(char **out, size_t *len, const char *s, size_t n) {
    *out = NULL;
    *len = 0;
    size_t nul = fed__data_json_nul(s, n);
    if (nul < n)
        return fed_errorf(FED_EFORMAT, "byte %zu: \\u0000 is not supported in a text", nul);
    cJSON *v = fed__data_json_parse(s, n);
    if (!v) {
        if (fed_json_oom()) return fed_errorf(FED_ENOMEM, "out of memory reading JSON");
        return fed_errorf(FED_EFORMAT, "not a JSON string");
    }
    fed_err err = FED_OK;
    if (!cJSON_IsString(v)) {
        err = fed_errorf(FED_EFORMAT, "not a JSON string");
    } else if (!(*out = fed_strdup(v->valuestring))) {
        err = FED_ENOMEM;
    } else {
        *len = strlen(*out);
    }
    cJSON_Delete(v);
    return err;
}
