/* The README's usage example: register, look up, list, unregister. */
#include <procreg/procreg.h>
#include <stdio.h>

int main(void)
{
    procreg *reg;
    GError *error = NULL;
    if (procreg_open("ghash", &reg, &error) != 0) {
        fprintf(stderr, "open: %s\n", error->message);
        return 1;
    }
    GVariant *meta = g_variant_new_parsed("{'port': <8080>, 'role': <'api'>}");
    procreg_register(reg, "production", "web", NULL, meta, NULL, &error);

    procreg_owner owner;
    if (procreg_lookup(reg, "production", "web", &owner, NULL) == 0)
        printf("web is served by pid %d\n", (int)owner.pid);

    procreg_entry *all;
    size_t n;
    procreg_list(reg, "production", &all, &n, NULL);
    for (size_t i = 0; i < n; i++)
        printf("%s/%s rev %llu\n", all[i].ns, all[i].name,
               (unsigned long long)all[i].revision);
    procreg_entries_free(all, n);

    procreg_unregister(reg, "production", "web", NULL);
    procreg_close(reg);
    return error != NULL;
}
