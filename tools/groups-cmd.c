/*
 * The procreg program's group commands: join (a member for another
 * process, or held by this command), leave (by member id, or every member
 * of a process), members and groups.  `watch` shows their JOINED and LEFT
 * events with the others.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

/* --pid as a pid; false (usage printed) when it is not one. */
static bool parse_pid(const char *text, pid_t *out)
{
    gint64 pid;
    if (!g_ascii_string_to_signed(text, 10, 1, G_MAXINT32, &pid, NULL)) {
        usage_error("--pid '%s' is not a process id", text);
        return false;
    }
    *out = (pid_t)pid;
    return true;
}

static void json_member(GString *o, const char *ns, const char *group,
                        const procreg_member *m)
{
    g_string_append(o, "{\"namespace\":");
    json_string(o, ns);
    g_string_append(o, ",\"group\":");
    json_string(o, group);
    char *t = time_text(m->joined_at);
    g_string_append_printf(o, ",\"id\":%" G_GUINT64_FORMAT ",\"pid\":%d,"
                           "\"start_time\":%" G_GUINT64_FORMAT
                           ",\"joined_at\":\"%s\",\"joined_at_us\":%"
                           G_GINT64_FORMAT ",\"metadata\":",
                           m->id, (int)m->owner.pid, m->owner.start_time, t,
                           m->joined_at);
    g_free(t);
    if (m->metadata != NULL)
        json_variant(o, m->metadata);
    else
        g_string_append(o, "null");
    g_string_append_c(o, '}');
}

static void print_member(const cli *c, const char *ns, const char *group,
                         const procreg_member *m)
{
    if (c->json) {
        GString *o = g_string_new(NULL);
        json_member(o, ns, group, m);
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
        return;
    }
    char *t = time_text(m->joined_at);
    char *md = m->metadata ? g_variant_print(m->metadata, FALSE) : NULL;
    printf("%-8" G_GUINT64_FORMAT " pid %-8d %s %s\n", m->id,
           (int)m->owner.pid, t, md ? md : "");
    g_free(t);
    g_free(md);
}

int cli_join(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "join NS GROUP (--pid PID | --hold) "
                            "[--meta KEY=VALUE ...]"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *group = arg(c, 1);
    if ((c->pid != NULL) == c->hold)
        return usage_error(
            "join needs one of --pid PID (a member owned by the running "
            "process PID) or --hold (this command stays as the member's "
            "owner until it is interrupted, e.g. procreg join %s %s "
            "--hold &)", ns, group);
    procreg_owner owner, *ownerp = NULL;
    GError *err = NULL;
    int rc = 0;
    if (c->pid != NULL) {
        pid_t pid;
        if (!parse_pid(c->pid, &pid))
            return EXIT_USAGE;
        rc = procreg_owner_from_pid(pid, &owner, &err);
        ownerp = &owner;
    }
    GVariant *meta = NULL;
    if (rc == 0 && !build_meta(c, &meta))
        return EXIT_USAGE;
    procreg_member m = {0};
    if (rc == 0)
        rc = procreg_join(reg, ns, group, ownerp, meta, &m, &err);
    if (meta != NULL)
        g_variant_unref(meta);
    if (rc != 0)
        return fail(rc, err);
    if (c->json)
        print_member(c, ns, group, &m);
    else
        printf("%s member %" G_GUINT64_FORMAT " of %s/%s as pid %d%s\n",
               c->hold ? "holding" : "joined", m.id, ns, group,
               (int)m.owner.pid, c->hold ? "; interrupt to leave" : "");
    fflush(stdout);
    uint64_t id = m.id;
    procreg_member_clear(&m);
    if (!c->hold)
        return EXIT_OK;
    run_until_signal();
    procreg_key *key = NULL;
    size_t removed = 0;
    rc = procreg_key_new(ns, group, &key, &err);
    if (rc == 0)
        rc = procreg_leave_key(reg, key, id, 0, &removed, &err);
    procreg_key_unref(key);
    if (rc != 0)
        return fail(rc, err);
    if (!c->json)
        printf("left %s/%s (signal %d)\n", ns, group, loop_signal);
    return EXIT_OK;
}

int cli_leave(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "leave NS GROUP (--member ID | --pid PID) "
                            "[--force]"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *group = arg(c, 1);
    if ((c->member != NULL) == (c->pid != NULL))
        return usage_error("leave needs one of --member ID or --pid PID: "
                           "this command owns no member of its own");
    GError *err = NULL;
    procreg_key *key = NULL;
    int rc = procreg_key_new(ns, group, &key, &err);
    if (rc != 0)
        return fail(rc, err);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    if (c->member != NULL) {
        guint64 id;
        if (!g_ascii_string_to_unsigned(c->member, 10, 1, G_MAXUINT64, &id,
                                        NULL)) {
            procreg_key_unref(key);
            g_array_unref(ids);
            return usage_error("--member '%s' is not a member id", c->member);
        }
        g_array_append_val(ids, id);
    } else {
        pid_t pid;
        procreg_member *all = NULL;
        size_t n = 0;
        if (!parse_pid(c->pid, &pid)) {
            procreg_key_unref(key);
            g_array_unref(ids);
            return EXIT_USAGE;
        }
        rc = procreg_members_key(reg, key, &all, &n, &err);
        for (size_t i = 0; i < n; i++)
            if (all[i].owner.pid == pid)
                g_array_append_val(ids, all[i].id);
        procreg_members_free(all, n);
    }
    size_t total = 0;
    for (guint i = 0; rc == 0 && i < ids->len; i++) {
        size_t removed = 0;
        rc = procreg_leave_key(reg, key, g_array_index(ids, uint64_t, i),
                               c->force ? PROCREG_FORCE : 0, &removed, &err);
        total += removed;
    }
    procreg_key_unref(key);
    g_array_unref(ids);
    if (rc != 0)
        return fail(rc, err);
    if (c->json)
        printf("{\"removed\":%zu}\n", total);
    else
        printf("removed %zu member%s of %s/%s\n", total,
               total == 1 ? "" : "s", ns, group);
    return EXIT_OK;
}

int cli_members(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "members NS GROUP"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *group = arg(c, 1);
    procreg_member *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_members(reg, ns, group, &all, &n, &err);
    if (rc != 0)
        return fail(rc, err);
    if (c->json) {
        GString *o = g_string_new("[");
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                g_string_append_c(o, ',');
            json_member(o, ns, group, &all[i]);
        }
        g_string_append_c(o, ']');
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
    } else {
        for (size_t i = 0; i < n; i++)
            print_member(c, ns, group, &all[i]);
        if (n == 0)
            printf("(no members)\n");
    }
    procreg_members_free(all, n);
    return EXIT_OK;
}

int cli_groups(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 1, "groups [NS]"))
        return EXIT_USAGE;
    procreg_group_info *infos = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_groups(reg, arg(c, 0), &infos, &n, &err);
    if (rc != 0)
        return fail(rc, err);
    GString *o = g_string_new(c->json ? "[" : NULL);
    for (size_t i = 0; i < n; i++) {
        if (c->json) {
            g_string_append(o, i > 0 ? ",{\"namespace\":" : "{\"namespace\":");
            json_string(o, infos[i].ns);
            g_string_append(o, ",\"group\":");
            json_string(o, infos[i].group);
            g_string_append_printf(o, ",\"members\":%zu}", infos[i].members);
        } else {
            g_string_append_printf(o, "%s/%s %zu\n", infos[i].ns,
                                   infos[i].group, infos[i].members);
        }
    }
    if (c->json)
        g_string_append(o, "]\n");
    fputs(o->str, stdout);
    g_string_free(o, TRUE);
    procreg_group_info_free(infos, n);
    return EXIT_OK;
}
