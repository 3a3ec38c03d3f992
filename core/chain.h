/* Chains of stage objects (curl's connection filters: a type table and a next pointer per
 * stage), their operations written once for every kind of stage in the manner of BSD's
 * <sys/queue.h>. A stage struct T has `const <type> *type`, whose table has `const char
 * *name` and `void (*destroy)(T *)` (NULL: nothing to free), and `T *next`; stages are
 * allocated with fed_malloc. FED_CHAIN_FUNCTIONS(T) defines, for T:
 *   void T_append(T **chain, T *s)        appends s at the end; the chain owns it
 *   void T_describe(const T *chain, char *buf, size_t len)
 *                                        the stages' names joined by " -> "
 *   void T_destroy_all(T **chain)        destroys and frees every stage; NULL-safe,
 *                                        sets *chain to NULL
 * Running the stages stays with each kind: what a stage does differs (the coordinator's
 * close a round's aggregate, the site's transform its update). */
#ifndef FED_CHAIN_H
#define FED_CHAIN_H

#include "core/alloc.h"

#include <stddef.h>
#include <stdio.h>

#define FED_CHAIN_FUNCTIONS(T)                                                                     \
    void T##_append(T **chain, T *s) {                                                             \
        while (*chain) chain = &(*chain)->next;                                                    \
        s->next = NULL;                                                                            \
        *chain = s;                                                                                \
    }                                                                                              \
    void T##_describe(const T *chain, char *buf, size_t len) {                                     \
        size_t used = 0;                                                                           \
        if (len) buf[0] = '\0';                                                                    \
        for (const T *s = chain; s && used < len; s = s->next) {                                   \
            int w =                                                                                \
                snprintf(buf + used, len - used, "%s%s", s == chain ? "" : " -> ", s->type->name); \
            if (w < 0) break;                                                                      \
            used += (size_t)w;                                                                     \
        }                                                                                          \
    }                                                                                              \
    void T##_destroy_all(T **chain) {                                                              \
        T *s = *chain;                                                                             \
        *chain = NULL;                                                                             \
        while (s) {                                                                                \
            T *next = s->next;                                                                     \
            if (s->type->destroy) s->type->destroy(s);                                             \
            fed_free(s);                                                                           \
            s = next;                                                                              \
        }                                                                                          \
    }

#endif
