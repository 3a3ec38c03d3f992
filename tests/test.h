/* A tiny assertion header for fedtune's test programs. Every CHECK counts as one
 * passed or failed assertion; a failure prints file:line, the expression and BOTH
 * operands, and the test goes on. A program ends with `return test_report();`, which
 * prints "N passed, N failed" and exits non-zero on any failure.
 *
 *   TEST(name) { CHECK_INT(add(2, 2), 4); }
 *   int main(void) { RUN(name); return test_report(); }
 */
#ifndef FED_TEST_H
#define FED_TEST_H

#include "core/err.h"

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

static inline int test_report(void) {
    printf("%d passed, %d failed\n", test_passed_, test_failed_);
    return test_failed_ == 0 ? 0 : 1;
}

#endif
