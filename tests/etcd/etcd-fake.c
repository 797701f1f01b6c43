/* Fake servers for the etcd backend tests: see etcd-fake.h. */
#include "etcd-fake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Every blocking wait wakes this often to see whether to stop. */
#define TICK_MS 50

struct etcd_gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool open;
};

etcd_gate *etcd_gate_new(void)
{
    etcd_gate *g = g_new0(etcd_gate, 1);
    pthread_mutex_init(&g->m, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&g->c, &a);
    pthread_condattr_destroy(&a);
    return g;
}

void etcd_gate_free(etcd_gate *g)
{
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->m);
    pthread_cond_destroy(&g->c);
    g_free(g);
}

void etcd_gate_open(etcd_gate *g)
{
    pthread_mutex_lock(&g->m);
    g->open = true;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}

void etcd_gate_close(etcd_gate *g)
{
    pthread_mutex_lock(&g->m);
    g->open = false;
    pthread_mutex_unlock(&g->m);
}

bool etcd_gate_wait(etcd_gate *g, int timeout_ms)
{
    gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    struct timespec ts = {.tv_sec = (time_t)(until / G_USEC_PER_SEC),
                          .tv_nsec = (long)(until % G_USEC_PER_SEC) * 1000};
    pthread_mutex_lock(&g->m);
    while (!g->open && pthread_cond_timedwait(&g->c, &g->m, &ts) == 0) {
    }
    bool open = g->open;
    pthread_mutex_unlock(&g->m);
    return open;
}

struct etcd_fake {
    etcd_fake_config cfg;
    char *reply;
    int listen_fd;
    int port;
    gint stop;
    gint accepted;
    gint floods_left; /* FAKE_PROXY: cfg.flood_count, counted down */
    char *swallow; /* under lock: etcd_fake_set_swallow()'s needle */
    pthread_t acceptor;
    pthread_mutex_t lock; /* conns, swallow */
    GArray *conns;        /* pthread_t of connection threads */
};

typedef struct {
    etcd_fake *f;
    int fd;
} conn_arg;

static bool stopping(etcd_fake *f)
{
    return g_atomic_int_get(&f->stop) != 0;
}

/* Wait until @fd is readable; false when stopping first. */
static bool wait_readable(etcd_fake *f, int fd)
{
    while (!stopping(f)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, TICK_MS);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
    return false;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0 && errno != EINTR)
            return;
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
    }
}

static void serve_stall(etcd_fake *f, int fd)
{
    char buf[4096];
    while (wait_readable(f, fd) && read(fd, buf, sizeof buf) > 0) {
    }
}

/* Read a request's head; false when stopping first. */
static bool read_head(etcd_fake *f, int fd, char *buf, size_t size)
{
    size_t got = 0;
    buf[0] = '\0';
    while (got < size - 1 && wait_readable(f, fd)) {
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r <= 0)
            return false;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            return true;
    }
    return false;
}

/* A 200 whose body never ends (chunked, no newline), until the client
 * goes or the server stops. */
static void flood(etcd_fake *f, int fd)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                               "application/json\r\nTransfer-Encoding: "
                               "chunked\r\n\r\n";
    if (send(fd, head, sizeof head - 1, MSG_NOSIGNAL) < 0)
        return;
    char chunk[8 + 2 + 65536 + 2];
    int n = g_snprintf(chunk, sizeof chunk, "%x\r\n", 65536);
    memset(chunk + n, 'x', 65536);
    memcpy(chunk + n + 65536, "\r\n", 2);
    size_t len = (size_t)n + 65536 + 2;
    while (!stopping(f)) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, TICK_MS) <= 0)
            continue;
        if (p.revents & (POLLERR | POLLHUP) ||
            send(fd, chunk, len, MSG_NOSIGNAL) < 0)
            return;
    }
}

static void serve_flood(etcd_fake *f, int fd)
{
    char buf[65536];
    if (read_head(f, fd, buf, sizeof buf))
        flood(f, fd);
}

static void serve_reply(etcd_fake *f, int fd)
{
    /* One request: its head and whatever body came with it. */
    char buf[65536];
    size_t got = 0;
    while (!f->cfg.at_once && got < sizeof buf - 1 && wait_readable(f, fd)) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            break;
    }
    write_all(fd, f->reply, f->cfg.reply_len);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Whether the reply to the request that starts with @n bytes of @buf is
 * to be swallowed. */
static bool swallows(etcd_fake *f, const char *buf, size_t n)
{
    pthread_mutex_lock(&f->lock);
    bool yes = f->swallow != NULL &&
               g_strstr_len(buf, (gssize)n, f->swallow) != NULL;
    pthread_mutex_unlock(&f->lock);
    return yes;
}

/* Whether one of the floods cfg.flood_count allows is left (and take
 * it). */
static bool take_flood(etcd_fake *f)
{
    int left;
    do {
        left = g_atomic_int_get(&f->floods_left);
        if (left <= 0)
            return false;
    } while (!g_atomic_int_compare_and_exchange(&f->floods_left, left,
                                                left - 1));
    return true;
}

/* Forward between the client @fd and the member.  When the client hangs
 * up first, the member still gets to answer (and the answer is still
 * seen), as it would had the client only stopped waiting. */
static void serve_proxy(etcd_fake *f, int fd)
{
    int up = connect_to(f->cfg.target_port);
    if (up < 0)
        return;
    bool client_open = true, swallowing = false;
    while (!stopping(f)) {
        struct pollfd p[2] = {{.fd = client_open ? fd : -1, .events = POLLIN},
                              {.fd = up, .events = POLLIN}};
        int r = poll(p, 2, TICK_MS);
        if (r < 0 && errno != EINTR)
            break;
        char buf[65536];
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (f->cfg.hold != NULL)
                while (!stopping(f) && !etcd_gate_wait(f->cfg.hold, TICK_MS)) {
                }
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0) {
                client_open = false;
            } else if (f->cfg.flood != NULL &&
                       g_strstr_len(buf, n, f->cfg.flood) != NULL &&
                       take_flood(f)) {
                flood(f, fd);
                break;
            } else {
                swallowing = swallows(f, buf, (size_t)n);
                write_all(up, buf, (size_t)n);
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(up, buf, sizeof buf);
            if (n <= 0)
                break;
            if (swallowing && f->cfg.on_reply != NULL)
                etcd_gate_open(f->cfg.on_reply);
            if (!client_open)
                break;
            if (!swallowing)
                write_all(fd, buf, (size_t)n);
        }
    }
    close(up);
}

static void *conn_main(void *data)
{
    conn_arg *a = data;
    switch (a->f->cfg.mode) {
    case FAKE_STALL:
        serve_stall(a->f, a->fd);
        break;
    case FAKE_REPLY:
        serve_reply(a->f, a->fd);
        break;
    case FAKE_FLOOD:
        serve_flood(a->f, a->fd);
        break;
    case FAKE_PROXY:
        serve_proxy(a->f, a->fd);
        break;
    }
    close(a->fd);
    g_free(a);
    return NULL;
}

static void *acceptor_main(void *data)
{
    etcd_fake *f = data;
    while (wait_readable(f, f->listen_fd)) {
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        g_atomic_int_inc(&f->accepted);
        conn_arg *a = g_new0(conn_arg, 1);
        a->f = f;
        a->fd = fd;
        pthread_t t;
        if (pthread_create(&t, NULL, conn_main, a) != 0) {
            close(fd);
            g_free(a);
            continue;
        }
        pthread_mutex_lock(&f->lock);
        g_array_append_val(f->conns, t);
        pthread_mutex_unlock(&f->lock);
    }
    return NULL;
}

etcd_fake *etcd_fake_start(const etcd_fake_config *config)
{
    etcd_fake *f = g_new0(etcd_fake, 1);
    f->cfg = *config;
    f->reply = g_memdup2(config->reply, config->reply_len);
    f->floods_left = config->flood_count;
    pthread_mutex_init(&f->lock, NULL);
    f->conns = g_array_new(FALSE, FALSE, sizeof(pthread_t));
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, len) != 0 ||
        listen(f->listen_fd, 64) != 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&a, &len) != 0)
        g_error("fake server: cannot listen on 127.0.0.1: %s",
                g_strerror(errno));
    f->port = ntohs(a.sin_port);
    if (pthread_create(&f->acceptor, NULL, acceptor_main, f) != 0)
        g_error("fake server: cannot start a thread");
    return f;
}

int etcd_fake_port(const etcd_fake *f)
{
    return f->port;
}

char *etcd_fake_url(const etcd_fake *f)
{
    return g_strdup_printf("http://127.0.0.1:%d", f->port);
}

void etcd_fake_set_swallow(etcd_fake *f, const char *needle)
{
    pthread_mutex_lock(&f->lock);
    g_free(f->swallow);
    f->swallow = g_strdup(needle);
    pthread_mutex_unlock(&f->lock);
}

int etcd_fake_connections(etcd_fake *f)
{
    return g_atomic_int_get(&f->accepted);
}

void etcd_fake_stop(etcd_fake *f)
{
    g_atomic_int_set(&f->stop, 1);
    pthread_join(f->acceptor, NULL);
    /* No connection thread starts after the acceptor is gone. */
    for (guint i = 0; i < f->conns->len; i++)
        pthread_join(g_array_index(f->conns, pthread_t, i), NULL);
    g_array_unref(f->conns);
    close(f->listen_fd);
    pthread_mutex_destroy(&f->lock);
    g_free(f->reply);
    g_free(f->swallow);
    g_free(f);
}
