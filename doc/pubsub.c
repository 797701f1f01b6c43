/*
 * Publish/subscribe over procreg groups, the example of doc/groups.md:
 * subscribers and a publisher in separate processes on one LMDB file.
 *
 * A subscriber binds a Unix datagram socket, joins the topic's group with
 * the socket's path in its metadata, prints what it receives, and leaves.
 * The publisher waits for its subscribers, then sends each message to
 * every member of the group: procreg_dispatch() calls it back once per
 * subscriber, and it writes one datagram to that subscriber's socket.
 * A subscriber that dies simply stops being a member (its owner is gone).
 *
 *   pubsub subscribe SPEC TOPIC DIR N   receive N messages, then leave
 *   pubsub publish SPEC TOPIC SUBSCRIBERS MESSAGE...
 *   pubsub demo                         both, in child processes, on a
 *                                       fresh file (what the test runs)
 *
 * Build: cc pubsub.c $(pkg-config --cflags --libs procreg)
 */
#include <procreg/procreg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define NS "pubsub"

static int subscribe(const char *spec, const char *topic, const char *dir,
                     int n)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s/sub-%d.sock", dir,
             (int)getpid());
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return perror("subscriber: socket"), 1;

    procreg *reg = NULL;
    GError *err = NULL;
    procreg_member me = {0};
    /* The member's metadata says where to send: the socket's path. */
    GVariant *md = g_variant_new_parsed("{'socket': <%s>}", addr.sun_path);
    if (procreg_open(spec, &reg, &err) != 0 ||
        procreg_join(reg, NS, topic, NULL, md, &me, &err) != 0) {
        fprintf(stderr, "subscriber: %s\n", err->message);
        return 1;
    }
    printf("subscriber %d joined %s as member %" G_GUINT64_FORMAT "\n",
           (int)getpid(), topic, me.id);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        char buf[256];
        ssize_t len = recv(fd, buf, sizeof buf - 1, 0);
        if (len < 0)
            return perror("subscriber: recv"), 1;
        buf[len] = '\0';
        printf("subscriber %d got: %s\n", (int)getpid(), buf);
        fflush(stdout);
    }
    procreg_leave(reg, NS, topic, NULL, NULL); /* all of ours */
    procreg_member_clear(&me);
    procreg_close(reg);
    close(fd);
    unlink(addr.sun_path);
    return 0;
}

typedef struct {
    int fd;
    const char *message;
    int sent;
} delivery;

/* One subscriber: send the message to the socket its metadata names. */
static bool deliver(const procreg_member *member, gpointer data)
{
    delivery *d = data;
    const char *path = NULL;
    if (member->metadata == NULL ||
        !g_variant_lookup(member->metadata, "socket", "&s", &path))
        return true; /* not a subscriber of ours: skip it */
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    g_strlcpy(to.sun_path, path, sizeof to.sun_path);
    if (sendto(d->fd, d->message, strlen(d->message), 0,
               (struct sockaddr *)&to, sizeof to) >= 0)
        d->sent++;
    return true; /* on to the next member */
}

static int publish(const char *spec, const char *topic, int subscribers,
                   char **messages, int n)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0 ||
        procreg_wait_members(reg, NS, topic, (size_t)subscribers, 10000, NULL,
                             NULL, &err) != 0) {
        fprintf(stderr, "publisher: %s\n", err->message);
        return 1;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (int i = 0; i < n; i++) {
        delivery d = {fd, messages[i], 0};
        if (procreg_dispatch(reg, NS, topic, deliver, &d, NULL, &err) != 0) {
            fprintf(stderr, "publisher: %s\n", err->message);
            return 1;
        }
        printf("publisher sent \"%s\" to %d subscribers\n", messages[i],
               d.sent);
    }
    close(fd);
    procreg_close(reg);
    return 0;
}

/* The test: two subscribers and a publisher, each its own process. */
static int demo(const char *self)
{
    char *dir = g_dir_make_tmp("procreg-pubsub-XXXXXX", NULL);
    char *spec = g_strdup_printf("lmdb:path=%s/registry.mdb", dir);
    char *messages[] = {"hello", "world"};
    pid_t subs[2];
    for (int i = 0; i < 2; i++) {
        subs[i] = fork();
        if (subs[i] == 0)
            execl(self, self, "subscribe", spec, "news", dir, "2",
                  (char *)NULL), _exit(127);
    }
    int status = publish(spec, "news", 2, messages, 2);
    for (int i = 0; i < 2; i++) {
        int st = 0;
        waitpid(subs[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            status = 1;
    }
    /* Every subscriber left: the group is gone. */
    procreg *reg = NULL;
    size_t left = 99;
    if (procreg_open(spec, &reg, NULL) != 0 ||
        procreg_group_count(reg, NS, "news", &left, NULL) != 0 || left != 0)
        status = 1;
    procreg_close(reg);
    g_autofree char *db = g_strdup_printf("%s/registry.mdb", dir);
    g_autofree char *lock = g_strdup_printf("%s-lock", db);
    g_autofree char *notify = g_strdup_printf("%s-notify", db);
    unlink(db);
    unlink(lock);
    unlink(notify);
    rmdir(dir);
    g_free(spec);
    g_free(dir);
    return status;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "demo") == 0) {
        g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
        return demo(self ? self : argv[0]);
    }
    if (argc == 6 && strcmp(argv[1], "subscribe") == 0)
        return subscribe(argv[2], argv[3], argv[4], atoi(argv[5]));
    if (argc >= 6 && strcmp(argv[1], "publish") == 0)
        return publish(argv[2], argv[3], atoi(argv[4]), argv + 5, argc - 5);
    fprintf(stderr, "usage: pubsub demo | subscribe SPEC TOPIC DIR N | "
                    "publish SPEC TOPIC SUBSCRIBERS MESSAGE...\n");
    return 2;
}
