/*
 * The backend compliance suite: one library of cases, instantiated once
 * per backend spec.  Every case runs on a fresh registry opened with
 * procreg_open(spec); cases that need a capability the backend lacks are
 * skipped with the reason.
 *
 * Spec placeholders, replaced afresh for every case:
 *   @TMPDIR@  a new directory from g_dir_make_tmp(), removed at teardown
 *             (persistent backends: "lmdb:path=@TMPDIR@/reg.mdb");
 *   @UNIQUE@  a string unique to the case ("pid-N"), for shared backends
 *             that isolate runs by a prefix.
 */
#ifndef PROCREG_TESTS_COMPLIANCE_H
#define PROCREG_TESTS_COMPLIANCE_H

#include <glib.h>

G_BEGIN_DECLS

/* g_test_add() every case as /compliance/<label>/<case> against @spec.
 * Both strings are copied. */
void compliance_add_tests(const char *label, const char *spec);

/* A GTest path component for @spec: placeholders dropped, characters other
 * than [A-Za-z0-9_-] replaced by '_'.  g_free() it. */
char *compliance_label_for_spec(const char *spec);

/* A backend module the suite's child processes must load too (the
 * multi-process case re-executes the program). */
void compliance_add_module(const char *path);

/* If @argv is a child invocation made by the suite, run it and return its
 * exit status; otherwise return -1.  Call it first in main(). */
int compliance_child_main(int argc, char **argv);

G_END_DECLS

#endif
