/*
 * Shared by the libFuzzer targets of tests/reliability/fuzz.  Each target
 * defines LLVMFuzzerInitialize() and LLVMFuzzerTestOneInput(); it is built
 * twice: as a libFuzzer program (clang, -fsanitize=fuzzer) in a fuzzing
 * build, and, in every build, linked with replay.c into a GTest program
 * that runs each file of the seed corpus and of the regression folder
 * once (suite 'reliability').
 *
 * A failed expectation aborts, so libFuzzer keeps the input as a crash.
 */
#ifndef PROCREG_FUZZ_COMMON_H
#define PROCREG_FUZZ_COMMON_H

#include <procreg/backend.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: expectation failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* A failure must carry a GError of the procreg domain with the same code
 * and a message. */
#define FUZZ_CHECK_ERROR(rc, err)                                             \
    do {                                                                      \
        FUZZ_CHECK((err) != NULL);                                            \
        FUZZ_CHECK((err)->domain == PROCREG_ERROR);                           \
        FUZZ_CHECK((err)->code == (rc));                                      \
        FUZZ_CHECK((err)->message != NULL && (err)->message[0] != '\0');      \
    } while (0)

/* Criticals are programming errors (a g_return_if_fail that fired): bad
 * input must give an error code, never one.  They abort here, whether or
 * not G_DEBUG=fatal-criticals is set, and with SIGABRT rather than glib's
 * SIGTRAP, which libFuzzer does not catch (it would lose the input). */
static inline GLogWriterOutput fuzz_log_writer(GLogLevelFlags level,
                                               const GLogField *fields,
                                               gsize n_fields, gpointer data)
{
    GLogWriterOutput out =
        g_log_writer_standard_streams(level, fields, n_fields, data);
    if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR | G_LOG_FLAG_FATAL))
        abort();
    return out;
}

static inline void fuzz_init_common(void)
{
    g_log_set_writer_func(fuzz_log_writer, NULL, NULL);
}

/* A copy of @size bytes with a terminating NUL (so the input may be used
 * as a C string that ends at its first NUL).  g_free() it. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = g_malloc(size + 1);
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
