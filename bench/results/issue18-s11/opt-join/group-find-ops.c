/*
 * Instructions of one group_find through optimized:inner=ckht, for
 * callgrind (issue 18, session 11, helper opt-join): a group of 1000
 * members, role = i % 100 (10 matches per find), then FINDS finds of a
 * rotating role inside loop_group_find(), which is all callgrind collects.
 * The same binary runs against two libraries (LD_LIBRARY_PATH), so the
 * difference is the decorator's.
 *
 *   cc -O2 -o /tmp/group-find-ops group-find-ops.c -I include \
 *      $(pkg-config --cflags --libs glib-2.0) -L build/core -lprocreg
 *   LD_LIBRARY_PATH=build/core valgrind --tool=callgrind \
 *      --toggle-collect=loop_group_find /tmp/group-find-ops
 */
#define PROCREG_ENABLE_BACKEND
#include <procreg/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MEMBERS 1000
#define FINDS 20000

static GVariant *roles[100];

static __attribute__((noinline)) size_t loop_group_find(procreg_backend *b)
{
    size_t found = 0;

    for (int i = 0; i < FINDS; i++) {
        GArray *out = procreg_member_array_new();

        if (procreg_backend_group_find(b, "n", "g", "role", roles[i % 100],
                                       out, NULL) != 0)
            abort();
        found += out->len;
        g_array_unref(out);
    }
    return found;
}

int main(void)
{
    procreg_backend *b;
    procreg_key *key;
    GError *error = NULL;
    size_t found;

    if (procreg_backend_open("optimized:inner=ckht", NULL, &b, &error) != 0 ||
        procreg_key_new("n", "g", &key, &error) != 0) {
        fprintf(stderr, "%s\n", error->message);
        return 1;
    }
    for (int r = 0; r < 100; r++)
        roles[r] = g_variant_ref_sink(g_variant_new_int32(r));
    for (int i = 0; i < MEMBERS; i++) {
        GVariantDict d;
        procreg_record rec = {.owner = {getpid(), 0}};

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert_value(&d, "role", roles[i % 100]);
        rec.metadata = g_variant_ref_sink(g_variant_dict_end(&d));
        if (procreg_backend_group_join(b, key, &rec, NULL, NULL) != 0)
            abort();
        g_variant_unref(rec.metadata);
    }
    found = loop_group_find(b);
    printf("finds %d found %zu (per find %.1f)\n", FINDS, found,
           (double)found / FINDS);
    procreg_key_unref(key);
    procreg_backend_close(b);
    return found == (size_t)FINDS * (MEMBERS / 100) ? 0 : 1;
}
