/*
 * The big-reader lock (core/brlock.c), compiled here with its test hooks,
 * in the two interleavings where it could let a reader and a writer in
 * together: a reader counted in its slot but not yet checking for a
 * writer while a writer announces itself and scans; and a writer
 * announced but not yet scanning while a reader counts itself.  Each
 * thread is held at its hook until the test lets it go, so the
 * interleaving is forced, not hoped for.  Each test checks who is inside
 * at every step: never a reader and a writer together, and the one kept
 * out gets in once the other leaves.
 */

#include "../../core/brlock.c"

#include <glib.h>
#include <stdbool.h>

/* A one-shot event, on pthreads (which ThreadSanitizer sees; GMutex is
 * futex-based inside an uninstrumented libglib). */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool set;
} gate;

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->m);
    g->set = true;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}

static void gate_wait(gate *g)
{
    pthread_mutex_lock(&g->m);
    while (!g->set)
        pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

static bool gate_is_open(gate *g)
{
    pthread_mutex_lock(&g->m);
    bool set = g->set;
    pthread_mutex_unlock(&g->m);
    return set;
}

static void gate_reset(gate *g)
{
    pthread_mutex_lock(&g->m);
    g->set = false;
    pthread_mutex_unlock(&g->m);
}

/* Hooks: a thread that armed one signals `reached` there, then waits for
 * `resume` (when given). */
typedef struct {
    gate *reached, *resume;
} hook;

static _Thread_local hook *reader_hook, *writer_hook;

static void run_hook(hook **h)
{
    hook *armed = *h;

    if (armed == NULL)
        return;
    *h = NULL; /* once: a reader that retries does not stop again */
    gate_open(armed->reached);
    if (armed->resume != NULL)
        gate_wait(armed->resume);
}

void procreg_brlock_hook_reader_counted(void)
{
    run_hook(&reader_hook);
}

void procreg_brlock_hook_writer_announced(void)
{
    run_hook(&writer_hook);
}

static procreg_brlock lock;
static atomic_int readers_in, writers_in;
#define GATE {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false}
static gate r_reached = GATE, r_resume = GATE, w_reached = GATE,
            w_resume = GATE, r_inside = GATE, w_inside = GATE,
            r_leave = GATE, w_leave = GATE;

static void reset_all(void)
{
    gate *all[] = {&r_reached, &r_resume, &w_reached, &w_resume,
                   &r_inside,  &w_inside, &r_leave,   &w_leave};

    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        gate_reset(all[i]);
    atomic_store(&readers_in, 0);
    atomic_store(&writers_in, 0);
}

static gpointer reader(gpointer data)
{
    hook h = {&r_reached, data};
    int slot;

    reader_hook = &h;
    slot = procreg_brlock_read_lock(&lock);
    g_assert_cmpint(atomic_load(&writers_in), ==, 0);
    atomic_fetch_add(&readers_in, 1);
    gate_open(&r_inside);
    gate_wait(&r_leave);
    atomic_fetch_sub(&readers_in, 1);
    procreg_brlock_read_unlock(&lock, slot);
    return NULL;
}

static gpointer writer(gpointer data)
{
    hook h = {&w_reached, data};

    writer_hook = &h;
    procreg_brlock_write_lock(&lock);
    g_assert_cmpint(atomic_load(&readers_in), ==, 0);
    atomic_fetch_add(&writers_in, 1);
    gate_open(&w_inside);
    gate_wait(&w_leave);
    atomic_fetch_sub(&writers_in, 1);
    procreg_brlock_write_unlock(&lock);
    return NULL;
}

/* Give a thread that should be kept out the time to (wrongly) get in. */
static void settle(void)
{
    g_usleep(20000);
}

/* A reader has counted itself and not yet looked for a writer; a writer
 * announces itself and scans: it must wait for that reader.  Then the
 * reader sees the writer, steps back, and waits until the writer leaves. */
static void test_reader_counted_then_writer(void)
{
    reset_all();
    procreg_brlock_init(&lock);
    GThread *r = g_thread_new("reader", reader, &r_resume);
    gate_wait(&r_reached); /* counted, held before its check */
    GThread *w = g_thread_new("writer", writer, NULL);
    gate_wait(&w_reached); /* announced; now scanning */
    settle();
    g_assert_cmpint(atomic_load(&writers_in), ==, 0);
    gate_open(&r_resume); /* the reader sees the writer and steps back */
    settle();
    g_assert_cmpint(atomic_load(&readers_in), ==, 0);
    gate_wait(&w_inside);
    settle();
    g_assert_cmpint(atomic_load(&readers_in), ==, 0);
    gate_open(&w_leave);
    gate_wait(&r_inside);
    gate_open(&r_leave);
    g_thread_join(w);
    g_thread_join(r);
}

/* A writer has announced itself and not yet scanned; a reader counts
 * itself: it must see the writer and step back, and the writer's scan
 * must not find it inside. */
static void test_writer_announced_then_reader(void)
{
    reset_all();
    procreg_brlock_init(&lock);
    GThread *w = g_thread_new("writer", writer, &w_resume);
    gate_wait(&w_reached); /* announced, held before its scan */
    GThread *r = g_thread_new("reader", reader, NULL);
    gate_wait(&r_reached); /* counted; now checking */
    settle();
    g_assert_cmpint(atomic_load(&readers_in), ==, 0);
    gate_open(&w_resume);
    gate_wait(&w_inside);
    settle();
    g_assert_cmpint(atomic_load(&readers_in), ==, 0);
    gate_open(&w_leave);
    gate_wait(&r_inside);
    gate_open(&r_leave);
    g_thread_join(w);
    g_thread_join(r);
}

static gpointer plain_reader(gpointer data)
{
    int slot = procreg_brlock_read_lock(&lock);

    gate_open(data);
    procreg_brlock_read_unlock(&lock, slot);
    return NULL;
}

/* Readers never wait for readers. */
static void test_readers_share(void)
{
    gate in = GATE;
    int slot;

    procreg_brlock_init(&lock);
    slot = procreg_brlock_read_lock(&lock);
    g_thread_join(g_thread_new("second", plain_reader, &in));
    g_assert_true(gate_is_open(&in));
    procreg_brlock_read_unlock(&lock, slot);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/brlock/reader-counted-then-writer",
                    test_reader_counted_then_writer);
    g_test_add_func("/core/brlock/writer-announced-then-reader",
                    test_writer_announced_then_reader);
    g_test_add_func("/core/brlock/readers-share", test_readers_share);
    return g_test_run();
}
