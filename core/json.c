/* cJSON allocation hooks (see json.h). */
#include "core/json.h"
#include "core/alloc.h"

#include <cJSON.h>
#include <pthread.h>

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
static _Thread_local bool json_oom;

static void *json_malloc(size_t size) {
    void *p = fed_malloc(size);
    if (!p) json_oom = true;
    return p;
}

static void install(void) {
    cJSON_Hooks hooks = {json_malloc, fed_free};
    cJSON_InitHooks(&hooks);
}

void fed_json_hooks(void) {
    pthread_once(&hooks_once, install);
    json_oom = false;
}

bool fed_json_oom(void) {
    return json_oom;
}
