/*
 * Helpers the cases of owner.c and groups.c share: collecting events from
 * a subscription, children that die with the case, and re-executed
 * children talked to over pipes.
 */
#include "compliance-private.h"

#include <errno.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

void cx_seen_event_free(gpointer p)
{
    seen_event *e = p;
    g_free(e->name);
    g_free(e);
}

static void collect(procreg *reg, const procreg_event *ev, gpointer data)
{
    (void)reg;
    seen_event *e = g_new0(seen_event, 1);
    e->kind = ev->kind;
    e->reason = ev->reason;
    e->name = g_strdup(ev->name);
    e->revision = ev->entry->revision;
    e->owner = ev->entry->owner.pid;
    e->external = ev->external;
    if (ev->member != NULL) {
        e->member_id = ev->member->id;
        e->member_group_ok = g_strcmp0(ev->member->group, ev->name) == 0 &&
                             g_strcmp0(ev->member->ns, ev->ns) == 0 &&
                             ev->member->owner.pid == ev->entry->owner.pid;
    }
    g_async_queue_push(data, e);
}

void cx_watch_clear(Watch *w)
{
    if (w->q == NULL)
        return;
    procreg_unsubscribe(w->reg, w->id);
    g_async_queue_unref(w->q);
    w->q = NULL;
}

static bool watch_start(Fixture *f, Watch *w, const char *ns,
                        const char *group)
{
    w->reg = f->reg;
    w->q = g_async_queue_new_full(cx_seen_event_free);
    int rc = group != NULL
                 ? procreg_subscribe_group(f->reg, ns, group, collect, w->q,
                                           NULL, NULL, &w->id, NULL)
                 : procreg_subscribe(f->reg, ns, NULL, collect, w->q, NULL,
                                     NULL, &w->id, NULL);
    if (rc == 0)
        return true;
    g_async_queue_unref(w->q);
    w->q = NULL;
    return false;
}

bool cx_watch_ns(Fixture *f, const char *ns, Watch *w)
{
    return watch_start(f, w, ns, NULL);
}

bool cx_watch_group(Fixture *f, const char *ns, const char *group, Watch *w)
{
    return watch_start(f, w, ns, group);
}

seen_event *cx_next_event(Watch *w)
{
    return g_async_queue_timeout_pop(w->q, (guint64)CX_WAIT_MS * 1000);
}

bool cx_expect_event(Watch *w, procreg_event_kind kind, const char *name,
                     procreg_event_reason *reason)
{
    seen_event *e;
    while ((e = cx_next_event(w)) != NULL) {
        bool match = e->kind == kind && strcmp(e->name, name) == 0;
        if (match)
            *reason = e->reason;
        cx_seen_event_free(e);
        if (match)
            return true;
    }
    return false;
}

void cx_child_clear(Child *c)
{
    if (c->pid > 0)
        cx_reap(c->pid);
    c->pid = 0;
}

char *cx_read_line(int fd)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + (gint64)CX_WAIT_MS * 1000;
    for (;;) {
        int left = (int)((deadline - g_get_monotonic_time()) / 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char c;
        if (left <= 0 || poll(&p, 1, left) <= 0 || read(fd, &c, 1) != 1) {
            g_string_free(s, TRUE);
            return NULL;
        }
        if (c == '\n')
            return g_string_free(s, FALSE);
        g_string_append_c(s, c);
    }
}

static int wait_child(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

void cx_spawned_end(Spawned *c)
{
    if (c->pid <= 0)
        return;
    close(c->in); /* the child ends when its stdin does */
    c->status = wait_child(c->pid);
    close(c->out);
    g_spawn_close_pid(c->pid);
    c->pid = 0;
}

bool cx_spawn(Fixture *f, const char *mode, Spawned *c, GError **error)
{
    g_auto(GStrv) argv = cx_child_argv(mode, f->spec);
    return g_spawn_async_with_pipes(NULL, argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                    &c->pid, &c->in, &c->out, NULL, error);
}
