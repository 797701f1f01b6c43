/*
 * Replays fuzz inputs as GTest cases, in any build (gcc or clang, with or
 * without sanitizers): linked with one fuzz target, it adds a case
 * /reliability/fuzz/<target>/<folder>/<file> for every file of every
 * folder given on the command line (the seed corpus and the regression
 * inputs: each crash a fuzzer ever found is kept there and replayed here).
 */
#include "fuzz-common.h"

#include <string.h>

#ifndef FUZZ_TARGET_NAME
#error "FUZZ_TARGET_NAME must name the fuzz target"
#endif

static void replay_one(gconstpointer data)
{
    const char *path = data;
    char *contents = NULL;
    gsize len = 0;
    GError *err = NULL;
    g_assert_true(g_file_get_contents(path, &contents, &len, &err));
    g_assert_no_error(err);
    g_test_message("%s: %zu bytes", path, (size_t)len);
    g_assert_cmpint(LLVMFuzzerTestOneInput((const uint8_t *)contents, len),
                    ==, 0);
    g_free(contents);
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Add the files of @dir, sorted; returns how many. */
static guint add_folder(const char *dir)
{
    GError *err = NULL;
    GDir *d = g_dir_open(dir, 0, &err);
    if (d == NULL) {
        g_printerr("replay: %s\n", err->message);
        g_error_free(err);
        exit(1);
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(d)) != NULL)
        if (n[0] != '.')
            g_ptr_array_add(names, g_strdup(n));
    g_dir_close(d);
    g_ptr_array_sort(names, cmp_str);
    char *base = g_path_get_basename(dir);
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        char *path = g_build_filename(dir, name, NULL);
        GString *test = g_string_new(NULL);
        g_string_printf(test, "/reliability/fuzz/%s/%s/", FUZZ_TARGET_NAME,
                        base);
        /* GTest paths: keep [A-Za-z0-9_.-]. */
        for (const char *p = name; *p; p++)
            g_string_append_c(test, g_ascii_isalnum(*p) || strchr("_.-", *p)
                                        ? *p : '_');
        g_test_add_data_func_full(test->str, path, replay_one, g_free);
        g_string_free(test, TRUE);
    }
    guint added = names->len;
    g_free(base);
    g_ptr_array_unref(names);
    return added;
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    LLVMFuzzerInitialize(&argc, &argv);
    guint total = 0;
    for (int i = 1; i < argc; i++)
        total += add_folder(argv[i]);
    if (total == 0) {
        g_printerr("replay: no inputs in the folders given\n");
        return 1;
    }
    return g_test_run();
}
