/*
 * Helpers the cases of owner.c, groups.c, lock.c, start.c and nsmeta.c
 * share: collecting events from a subscription, children that die with the
 * case, and re-executed children talked to over pipes.
 */
#include "compliance-private.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Events from the dispatcher thread to the case: a queue under a pthread
 * mutex (GAsyncQueue's futex lock is invisible to ThreadSanitizer inside
 * the uninstrumented libglib). */
struct cx_event_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    GQueue events; /* seen_event* */
};

static cx_event_queue *queue_new(void)
{
    cx_event_queue *q = g_new0(cx_event_queue, 1);
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &attr);
    pthread_condattr_destroy(&attr);
    g_queue_init(&q->events);
    return q;
}

static void queue_free(cx_event_queue *q)
{
    g_queue_clear_full(&q->events, cx_seen_event_free);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    g_free(q);
}

static void queue_push(cx_event_queue *q, seen_event *e)
{
    pthread_mutex_lock(&q->lock);
    g_queue_push_tail(&q->events, e);
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

static seen_event *queue_pop(cx_event_queue *q, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&q->lock);
    while (g_queue_is_empty(&q->events) &&
           pthread_cond_timedwait(&q->cond, &q->lock, &deadline) != ETIMEDOUT)
        ;
    seen_event *e = g_queue_pop_head(&q->events);
    pthread_mutex_unlock(&q->lock);
    return e;
}

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
    e->seq = ev->seq;
    e->position = ev->position;
    if (ev->member != NULL) {
        e->member_id = ev->member->id;
        e->member_group_ok = g_strcmp0(ev->member->group, ev->name) == 0 &&
                             g_strcmp0(ev->member->ns, ev->ns) == 0 &&
                             ev->member->owner.pid == ev->entry->owner.pid;
    }
    queue_push(data, e);
}

void cx_watch_clear(Watch *w)
{
    if (w->q == NULL)
        return;
    procreg_unsubscribe(w->reg, w->id);
    queue_free(w->q);
    w->q = NULL;
}

static bool watch_start(Fixture *f, Watch *w, const char *ns,
                        const char *group)
{
    w->reg = f->reg;
    w->q = queue_new();
    int rc = group != NULL
                 ? procreg_subscribe_group(f->reg, ns, group, collect, w->q,
                                           NULL, NULL, &w->id, NULL)
                 : procreg_subscribe(f->reg, ns, NULL, collect, w->q, NULL,
                                     NULL, &w->id, NULL);
    if (rc == 0)
        return true;
    queue_free(w->q);
    w->q = NULL;
    return false;
}

int cx_watch_from(Fixture *f, const char *ns, uint64_t after, Watch *w,
                  GError **error)
{
    w->reg = f->reg;
    w->q = queue_new();
    int rc = procreg_subscribe_from(f->reg, ns, NULL, after, collect, w->q,
                                    NULL, NULL, &w->id, error);
    if (rc != 0) {
        queue_free(w->q);
        w->q = NULL;
    }
    return rc;
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
    return queue_pop(w->q, CX_WAIT_MS);
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
    return cx_read_line_within(fd, CX_WAIT_MS);
}

char *cx_read_line_within(int fd, int timeout_ms)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
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

void cx_spawned_kill(Spawned *c)
{
    if (c->pid > 0)
        kill(c->pid, SIGKILL);
    cx_spawned_end(c);
}

bool cx_write_line(int fd, const char *line)
{
    g_autofree char *text = g_strconcat(line, "\n", NULL);
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}

bool cx_spawn(Fixture *f, const char *mode, Spawned *c, GError **error)
{
    g_auto(GStrv) argv = cx_child_argv(mode, f->spec);
    return g_spawn_async_with_pipes(NULL, argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                    &c->pid, &c->in, &c->out, NULL, error);
}
