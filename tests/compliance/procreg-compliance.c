/*
 * procreg-compliance: run the backend compliance suite.
 *
 *   procreg-compliance [--backend SPEC]... [--backend-module PATH.so]...
 *                      [GTest options: -p PATH, --tap, -l, ...]
 *
 * Without --backend it runs the suite for every backend procreg knows
 * (built-in ones and those loaded with --backend-module).  Every case is
 * /compliance/<label>/<case>, where <label> comes from the spec.  The exit
 * status is non-zero when any case failed.
 */
#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include "compliance.h"

#include <procreg/backend.h>

#include <stdio.h>
#include <string.h>

static void usage(FILE *to, const char *prog)
{
    fprintf(to,
            "Usage: %s [--backend SPEC]... [--backend-module PATH.so]... "
            "[GTest options]\n"
            "Run the procreg backend compliance suite.\n\n"
            "  --backend SPEC          backend spec to test (repeatable); "
            "default: every\n"
            "                          available backend.  @TMPDIR@ in SPEC "
            "becomes a fresh\n"
            "                          directory per case, @UNIQUE@ a "
            "unique string.\n"
            "  --backend-module PATH   load a backend module first "
            "(procreg_backend_load_module)\n"
            "  --list-backends         print the available backends and "
            "exit\n"
            "  -p /compliance/LABEL/CASE, -l, --tap, ...: see --help-gtest "
            "(GTest's --help)\n",
            prog);
}

int main(int argc, char **argv)
{
    int child = compliance_child_main(argc, argv);
    if (child >= 0)
        return child;

    g_autoptr(GPtrArray) specs = g_ptr_array_new();
    g_autoptr(GPtrArray) rest = g_ptr_array_new();
    bool list = false;
    g_ptr_array_add(rest, argv[0]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = NULL;
        bool is_backend = false, is_module = false;
        if (strcmp(a, "--backend") == 0 || strcmp(a, "--backend-module") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value\n", argv[0], a);
                return 2;
            }
            is_backend = strcmp(a, "--backend") == 0;
            is_module = !is_backend;
            value = argv[++i];
        } else if (g_str_has_prefix(a, "--backend=")) {
            is_backend = true;
            value = a + strlen("--backend=");
        } else if (g_str_has_prefix(a, "--backend-module=")) {
            is_module = true;
            value = a + strlen("--backend-module=");
        } else if (strcmp(a, "--list-backends") == 0) {
            list = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, argv[0]);
            return 0;
        } else if (strcmp(a, "--help-gtest") == 0) {
            g_ptr_array_add(rest, (char *)"--help");
        } else {
            g_ptr_array_add(rest, argv[i]);
        }
        if (is_backend)
            g_ptr_array_add(specs, (char *)value);
        if (is_module) {
            GError *err = NULL;
            char *name = NULL;
            if (procreg_backend_load_module(value, &name, &err) != 0) {
                fprintf(stderr, "%s: cannot load backend module %s: %s\n",
                        argv[0], value, err->message);
                g_error_free(err);
                return 2;
            }
            g_free(name);
            compliance_add_module(value);
        }
    }

    if (list) {
        g_auto(GStrv) names = procreg_backend_names();
        for (char **n = names; n && *n; n++)
            printf("%s\n", *n);
        return 0;
    }

    g_auto(GStrv) all = NULL;
    if (specs->len == 0) {
        all = procreg_backend_names();
        for (char **n = all; n && *n; n++)
            g_ptr_array_add(specs, *n);
    }

    g_ptr_array_add(rest, NULL);
    int targc = (int)rest->len - 1;
    char **targv = (char **)rest->pdata;
    g_test_init(&targc, &targv, NULL);
    /* A failed check fails its case and the run goes on to the others. */
    g_test_set_nonfatal_assertions();

    for (guint i = 0; i < specs->len; i++) {
        g_autofree char *label = compliance_label_for_spec(specs->pdata[i]);
        compliance_add_tests(label, specs->pdata[i]);
    }
    return g_test_run();
}
