/* A tiny assertion header for fedtune's test programs. Every CHECK counts as one
 * passed or failed assertion; a failure prints file:line, the expression and BOTH
 * operands, and the test goes on. A program ends with `return test_report();`, which
 * prints "N passed, N failed" and exits non-zero on any failure.
 *
 *   TEST(name) { CHECK_INT(add(2, 2), 4); }
 *   int main(void) { RUN(name); return test_report(); }
 *
 * FOR_EACH_ALLOC_FAILURE runs a piece of code under fail-the-Nth-allocation (below).
 */
#ifndef FED_TEST_H
#define FED_TEST_H

#include "core/alloc_internal.h"
#include "core/err.h"

#include <stdbool.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_passed_, test_failed_;
static const char *test_current_ = "";

static inline void test_fail_(const char *file, int line) {
    test_failed_++;
    fprintf(stderr, "FAIL %s:%d [%s] ", file, line, test_current_);
}

#define TEST(name) static void name(void)
#define RUN(name)                                                                                  \
    do {                                                                                           \
        test_current_ = #name;                                                                     \
        int before_ = test_failed_;                                                                \
        name();                                                                                    \
        fprintf(stderr, "%s %s\n", test_failed_ == before_ ? "ok  " : "FAILED", #name);            \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s\n", #cond);                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ == b_) {                                                                            \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s == %s: %lld != %lld\n", #a, #b, a_, b_);                           \
        }                                                                                          \
    } while (0)

#define CHECK_SIZE(a, b)                                                                           \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ == b_) {                                                                            \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s == %s: %llu != %llu\n", #a, #b, a_, b_);                           \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol, NaN never passes. */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (fabs(a_ - b_) <= t_) {                                                                 \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s ~ %s: %.9g vs %.9g (diff %.3g > %.3g)\n", #a, #b, a_, b_,          \
                    fabs(a_ - b_), t_);                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ && b_ && strcmp(a_, b_) == 0) {                                                     \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s == %s: \"%s\" != \"%s\"\n", #a, #b, a_ ? a_ : "(null)",            \
                    b_ ? b_ : "(null)");                                                           \
        }                                                                                          \
    } while (0)

/* Substring check, for error messages. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ && n_ && strstr(h_, n_)) {                                                          \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "\"%s\" does not contain \"%s\"\n", h_ ? h_ : "(null)",                \
                    n_ ? n_ : "(null)");                                                           \
        }                                                                                          \
    } while (0)

#define CHECK_MEM(a, b, n)                                                                         \
    do {                                                                                           \
        if (memcmp((a), (b), (n)) == 0) {                                                          \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s and %s differ in their first %zu bytes\n", #a, #b, (size_t)(n));   \
        }                                                                                          \
    } while (0)

/* A fed_err call that must succeed; on failure shows the code and the detail. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        fed_err e_ = (expr);                                                                       \
        if (e_ == FED_OK) {                                                                        \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s: %s (%s)\n", #expr, fed_errname(e_), fed_errdetail(e_));           \
        }                                                                                          \
    } while (0)

/* A fed_err call that must fail with exactly code. */
#define CHECK_ERR(expr, code)                                                                      \
    do {                                                                                           \
        fed_err e_ = (expr);                                                                       \
        if (e_ == (code)) {                                                                        \
            test_passed_++;                                                                        \
        } else {                                                                                   \
            test_fail_(__FILE__, __LINE__);                                                        \
            fprintf(stderr, "%s: got %s, expected %s\n", #expr, fed_errname(e_),                   \
                    fed_errname(code));                                                            \
        }                                                                                          \
    } while (0)

/* ---- allocation failures (SQLite's do_faultsim_test) ----------------------------------
 *
 *   FOR_EACH_ALLOC_FAILURE(f) {
 *       fed_arch *a = NULL;
 *       fed_err e = ALLOC_TRY(f, fed_arch_parse(&a, "fedavg-cnn"));
 *       if (f.failed) CHECK(a == NULL);   // what a failed run must leave behind
 *       fed_arch_destroy(&a);
 *   }
 *
 * The body runs again and again: the call inside ALLOC_TRY has its 1st allocation fail
 * (core/alloc_internal.h), then its 2nd, ... until a run in which the call completes
 * without reaching the allocation set to fail; f.failed tells whether this run's
 * failure was hit, f.nth which allocation it was. ALLOC_TRY itself asserts the
 * contract of a fed_err call: FED_ENOMEM when an allocation failed (FED_OK there means
 * the failure was ignored), FED_OK when none did. Leaks on the failure paths are ASan's
 * to catch. ALLOC_TRY_ANY(f, statement) arms the same way around a statement whose
 * outcome the body checks itself (a bool, a pointer, a failure that retries absorb).
 * Exactly one ALLOC_TRY or ALLOC_TRY_ANY per run (the hook is armed only inside it, so
 * `continue` and `break` are safe). A run count over ALLOC_FAILURE_MAX fails the test. */
#define ALLOC_FAILURE_MAX 100000

typedef struct alloc_faults {
    long nth;         /* the allocation this run fails, from 1 */
    bool failed;      /* this run's call reached it (the allocation returned NULL) */
    int tries;        /* ALLOC_TRY / ALLOC_TRY_ANY in this run */
    const char *file; /* the loop, for failure lines */
    int line;
} alloc_faults;

/* Ends the previous run and starts the next; false once a run completed unhurt. */
static inline bool alloc_faults_next_(alloc_faults *f) {
    if (f->nth > 0) {
        if (f->tries != 1) {
            test_fail_(f->file, f->line);
            fprintf(stderr, "FOR_EACH_ALLOC_FAILURE: run %ld made %d ALLOC_TRY calls, not 1\n",
                    f->nth, f->tries);
            return false;
        }
        if (!f->failed) return false; /* the call made fewer than nth allocations */
    }
    if (++f->nth > ALLOC_FAILURE_MAX) {
        test_fail_(f->file, f->line);
        fprintf(stderr, "FOR_EACH_ALLOC_FAILURE: still failing after %d runs\n", ALLOC_FAILURE_MAX);
        return false;
    }
    f->failed = false;
    f->tries = 0;
    return true;
}

static inline void alloc_faults_arm_(alloc_faults *f) {
    f->tries++;
    fed_alloc_fail_at(f->nth);
}

static inline void alloc_faults_disarm_(alloc_faults *f) {
    f->failed = fed_alloc_count() >= f->nth;
    fed_alloc_fail_at(0);
}

/* Disarms and checks e against the run: FED_ENOMEM if it failed, FED_OK if not. */
static inline fed_err alloc_faults_done_(alloc_faults *f, fed_err e, const char *call,
                                         const char *file, int line) {
    alloc_faults_disarm_(f);
    if (f->failed ? e == FED_ENOMEM : e == FED_OK) {
        test_passed_++;
    } else if (f->failed) {
        test_fail_(file, line);
        fprintf(stderr, "%s with allocation %ld failing: %s (%s), expected ENOMEM\n", call, f->nth,
                fed_errname(e), e == FED_OK ? "the failure was ignored" : fed_errdetail(e));
    } else {
        test_fail_(file, line);
        fprintf(stderr, "%s with no allocation failing: %s (%s)\n", call, fed_errname(e),
                fed_errdetail(e));
    }
    return e;
}

#define FOR_EACH_ALLOC_FAILURE(f)                                                                  \
    for (alloc_faults f = {0, false, 0, __FILE__, __LINE__}; alloc_faults_next_(&f);)
#define ALLOC_TRY(f, call)                                                                         \
    alloc_faults_done_(&(f), (alloc_faults_arm_(&(f)), (call)), #call, __FILE__, __LINE__)
#define ALLOC_TRY_ANY(f, ...)                                                                      \
    do {                                                                                           \
        alloc_faults_arm_(&(f));                                                                   \
        __VA_ARGS__;                                                                               \
        alloc_faults_disarm_(&(f));                                                                \
    } while (0)

static inline int test_report(void) {
    printf("%d passed, %d failed\n", test_passed_, test_failed_);
    return test_failed_ == 0 ? 0 : 1;
}

#endif
