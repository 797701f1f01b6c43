/* Backend types: the built-in table, application registrations, modules. */
#include "internal.h"

#include <gmodule.h>
#include <string.h>

/* Backends registered at run time.  Built-ins live in a static table.
 * A GRWLock rather than a GMutex: glib's GMutex is a bare futex that
 * ThreadSanitizer cannot see, GRWLock is a pthread rwlock it can. */
static GRWLock types_lock;
static GPtrArray *registered; /* const procreg_backend_ops* */

PROCREG_INTERNAL int procreg_backend_ops_check(const procreg_backend_ops *ops,
                                               GError **error)
{
    if (ops == NULL)
        return procreg_set_error(error, PROCREG_EINVAL, "backend is NULL");
    if (ops->version == 0 || ops->version > PROCREG_BACKEND_VERSION)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend '%s': version %u is not supported "
                                 "(this procreg knows 1 to %d)",
                                 ops->name ? ops->name : "?", ops->version,
                                 PROCREG_BACKEND_VERSION);
    if (ops->name == NULL || ops->name[0] == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend has no name");
    for (const char *p = ops->name; *p; p++)
        if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-' && *p != '.')
            return procreg_set_error(error, PROCREG_EINVAL,
                                     "backend name '%s' may only hold "
                                     "letters, digits, '_', '-' and '.'",
                                     ops->name);
#define REQUIRE(slot)                                                         \
    if (ops->slot == NULL)                                                    \
        return procreg_set_error(error, PROCREG_EINVAL,                       \
                                 "incomplete backend '%s': the required "     \
                                 "slot '" #slot "' is not set", ops->name);
    REQUIRE(init)
    REQUIRE(destroy)
    REQUIRE(register_entry)
    REQUIRE(lookup)
    REQUIRE(lookup_entry)
    REQUIRE(unregister)
    REQUIRE(list_all)
    REQUIRE(update_metadata)
    REQUIRE(health_check)
    if ((ops->caps & PROCREG_CAP_LOCKFREE_READS) &&
        !(ops->caps & PROCREG_CAP_THREADSAFE))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend '%s': LOCKFREE_READS needs "
                                 "THREADSAFE", ops->name);
    if ((ops->caps & PROCREG_CAP_GROUPS) && ops->version < 3)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend '%s': GROUPS needs a version 3 "
                                 "table, not %u", ops->name, ops->version);
    if ((ops->caps & PROCREG_CAP_HISTORY) &&
        (ops->version < 4 || ops->history_head == NULL ||
         ops->history_read == NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend '%s': HISTORY needs a version 4 "
                                 "table with history_head and history_read",
                                 ops->name);
    if (ops->caps & PROCREG_CAP_GROUPS) {
        REQUIRE(group_join)
        REQUIRE(group_leave)
        REQUIRE(group_members)
        REQUIRE(group_list_all)
    }
#undef REQUIRE
    return 0;
}

static const procreg_backend_ops *find_locked(const char *name)
{
    for (size_t i = 0; procreg_builtin_backends[i]; i++)
        if (strcmp(procreg_builtin_backends[i]->name, name) == 0)
            return procreg_builtin_backends[i];
    for (guint i = 0; registered && i < registered->len; i++) {
        const procreg_backend_ops *ops = registered->pdata[i];
        if (strcmp(ops->name, name) == 0)
            return ops;
    }
    return NULL;
}

PROCREG_INTERNAL const procreg_backend_ops *procreg_backend_find(const char *name)
{
    g_rw_lock_reader_lock(&types_lock);
    const procreg_backend_ops *ops = find_locked(name);
    g_rw_lock_reader_unlock(&types_lock);
    return ops;
}

PROCREG_API int procreg_backend_register(const procreg_backend_ops *ops,
                                         GError **error)
{
    int rc = procreg_backend_ops_check(ops, error);
    if (rc != 0)
        return rc;
    g_rw_lock_writer_lock(&types_lock);
    if (find_locked(ops->name) != NULL) {
        g_rw_lock_writer_unlock(&types_lock);
        return procreg_set_error(error, PROCREG_EEXISTS,
                                 "a backend named '%s' is already registered",
                                 ops->name);
    }
    if (registered == NULL)
        registered = g_ptr_array_new();
    g_ptr_array_add(registered, (gpointer)ops);
    g_rw_lock_writer_unlock(&types_lock);
    return 0;
}

PROCREG_API char **procreg_backend_names(void)
{
    GPtrArray *names = g_ptr_array_new();
    g_rw_lock_reader_lock(&types_lock);
    for (size_t i = 0; procreg_builtin_backends[i]; i++)
        g_ptr_array_add(names, g_strdup(procreg_builtin_backends[i]->name));
    for (guint i = 0; registered && i < registered->len; i++)
        g_ptr_array_add(names, g_strdup(((const procreg_backend_ops *)
                                         registered->pdata[i])->name));
    g_rw_lock_reader_unlock(&types_lock);
    g_ptr_array_add(names, NULL);
    return (char **)g_ptr_array_free(names, FALSE);
}

PROCREG_INTERNAL char *procreg_backend_names_joined(void)
{
    char **names = procreg_backend_names();
    char *joined = g_strjoinv(", ", names);
    g_strfreev(names);
    return joined;
}

typedef const procreg_backend_ops *(*module_entry_fn)(void);

PROCREG_API int procreg_backend_load_module(const char *path, char **name,
                                            GError **error)
{
    if (path == NULL || *path == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend module path is empty");
    GModule *module = g_module_open(path, G_MODULE_BIND_LOCAL);
    if (module == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "cannot load backend module '%s': %s", path,
                                 g_module_error());
    gpointer sym = NULL;
    if (!g_module_symbol(module, "procreg_backend_module", &sym) ||
        sym == NULL) {
        g_module_close(module);
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "'%s' is not a procreg backend module: it "
                                 "does not export procreg_backend_module()",
                                 path);
    }
    const procreg_backend_ops *ops = ((module_entry_fn)sym)();
    int rc = procreg_backend_register(ops, error);
    if (rc != 0) {
        g_module_close(module);
        return rc;
    }
    /* The ops table lives in the module: keep it loaded for good. */
    g_module_make_resident(module);
    if (name != NULL)
        *name = g_strdup(ops->name);
    return 0;
}
