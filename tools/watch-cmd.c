/*
 * The procreg program's commands that follow changes: watch (with --from,
 * from a position a watch printed: procreg_subscribe_from()) and wait.
 */
#include "cli.h"

#include <stdio.h>

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    const cli *c = data;
    const procreg_entry *e = ev->entry;
    if (c->json) {
        GString *o = g_string_new("{\"seq\":");
        char *t = time_text(ev->time);
        g_string_append_printf(o, "%" G_GUINT64_FORMAT ",\"position\":%"
                               G_GUINT64_FORMAT ",\"time\":\"%s\","
                               "\"event\":\"%s\",\"reason\":\"%s\","
                               "\"external\":%s,\"entry\":", ev->seq,
                               ev->position, t,
                               procreg_event_kind_name(ev->kind),
                               procreg_event_reason_name(ev->reason),
                               ev->external ? "true" : "false");
        g_free(t);
        json_entry(o, ev->ns, ev->name, e);
        g_string_append_c(o, '}');
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
    } else {
        char *t = time_text(ev->time);
        char *m = e && e->metadata ? g_variant_print(e->metadata, FALSE)
                                   : g_strdup("");
        printf("%s %-12s %s/%s pid %d rev %" G_GUINT64_FORMAT "%s%s%s %s"
               " @%" G_GUINT64_FORMAT "\n", t,
               procreg_event_kind_name(ev->kind), ev->ns, ev->name,
               e ? (int)e->owner.pid : 0, e ? e->revision : 0,
               ev->reason != PROCREG_REASON_NONE ? " (" : "",
               ev->reason != PROCREG_REASON_NONE
                   ? procreg_event_reason_name(ev->reason)
                   : "",
               ev->reason != PROCREG_REASON_NONE ? ")" : "", m,
               ev->position);
        g_free(t);
        g_free(m);
    }
    fflush(stdout);
}

int cmd_watch(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 2, "watch [NS [NAME]] [--from POSITION]"))
        return EXIT_USAGE;
    uint64_t from = 0;
    if (c->from != NULL && !g_ascii_string_to_unsigned(c->from, 10, 0,
                                                       G_MAXUINT64, &from,
                                                       NULL))
        return usage_error("--from '%s' is not a position (a number a "
                           "watch printed after '@')", c->from);
    uint64_t id = 0;
    GError *err = NULL;
    int rc = c->from != NULL
                 ? procreg_subscribe_from(reg, arg(c, 0), arg(c, 1), from,
                                          on_event, (gpointer)c, NULL,
                                          g_main_context_default(), &id, &err)
                 : procreg_subscribe(reg, arg(c, 0), arg(c, 1), on_event,
                                     (gpointer)c, NULL,
                                     g_main_context_default(), &id, &err);
    if (rc != 0)
        return fail(rc, err);
    /* On stderr, so --json output stays pure; scripts may wait for it. */
    fprintf(stderr, "watching %s%s%s; interrupt to stop\n",
            arg(c, 0) ? arg(c, 0) : "every namespace", arg(c, 1) ? "/" : "",
            arg(c, 1) ? arg(c, 1) : "");
    run_until_signal();
    procreg_unsubscribe(reg, id);
    return EXIT_OK;
}

int cmd_wait(procreg *reg, const cli *c)
{
    int timeout_ms;
    if (!want_args(c, 2, 2, "wait NS NAME [--timeout SECONDS]") ||
        !timeout_ms_of(c, &timeout_ms))
        return EXIT_USAGE;
    procreg_entry e = {0};
    GError *err = NULL;
    int rc = procreg_wait_for(reg, arg(c, 0), arg(c, 1), timeout_ms, NULL, &e,
                              &err);
    if (rc != 0)
        return fail(rc, err);
    print_entry(c, arg(c, 0), arg(c, 1), &e);
    procreg_entry_clear(&e);
    return EXIT_OK;
}

