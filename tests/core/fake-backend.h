/*
 * A counting fake backend for testing the dispatcher (core/) itself.
 *
 * It stores entries in a GHashTable like a real backend, and besides:
 *   - counts the calls of every slot (fake->calls[FAKE_OP_*]);
 *   - returns a chosen error from a slot (fake->fail[FAKE_OP_*] = code);
 *   - can sleep inside a slot (fake->sleep_us[FAKE_OP_*]) and records how
 *     many calls were inside it at once, and every time the core broke the
 *     locking its capability flags ask for (fake->violations).
 *
 * Tables (all register the same functions):
 *   fake_ops          "fake"       caps 0 (the core must serialise it);
 *                                  every optional slot; options a, b, size,
 *                                  flag, fail_init.
 *   fake_pr_ops       "fake_pr"    PROCREG_CAP_PARALLEL_READS.
 *   fake_ts_ops       "fake_ts"    PROCREG_CAP_THREADSAFE.
 *   fake_mp_ops       "fake_mp"    PROCREG_CAP_THREADSAFE | MULTIPROCESS:
 *                                  as fake_ts, but the core must expect
 *                                  other processes to write its entries.
 *   fake_own_ops      "fake_own"   as fake_mp, with the version-5
 *                                  unregister_owned slot.
 *   fake_min_ops      "fake_min"   required slots only (core fallbacks).
 *   fake_deco_ops     "fake_deco"  a decorator: options inner (a spec) and
 *                                  ttl_ms; forwards to the inner backend.
 */
#ifndef PROCREG_TESTS_FAKE_BACKEND_H
#define PROCREG_TESTS_FAKE_BACKEND_H

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <pthread.h>
#include <stdatomic.h>

typedef enum {
    FAKE_OP_INIT,
    FAKE_OP_DESTROY,
    FAKE_OP_REGISTER,
    FAKE_OP_LOOKUP,
    FAKE_OP_LOOKUP_ENTRY,
    FAKE_OP_UNREGISTER,
    FAKE_OP_LIST_ALL,
    FAKE_OP_UPDATE,
    FAKE_OP_HEALTH,
    FAKE_OP_COUNT,
    FAKE_OP_LIST_NAMES,
    FAKE_OP_DROP,
    FAKE_OP_FIND,
    FAKE_OP_MEMORY,
    FAKE_OP_STATS,
    FAKE_OP_UNREGISTER_OWNED,
    FAKE_N_OPS
} FakeOp;

typedef void (*FakeHook)(FakeOp op, void *data);

/* One stored entry (the values of FakeBackend.store). */
typedef struct {
    char *ns;
    char *name;
    procreg_owner owner;
    GVariant *metadata;
    int64_t registered_at;
    uint64_t revision;
} FakeItem;

typedef struct {
    const procreg_backend_ops *ops;
    pthread_mutex_t lock; /* the fake's own store lock (pthread: TSan sees it) */
    GHashTable *store;
    uint64_t last_revision;

    /* Set by tests before the calls they concern. */
    int fail[FAKE_N_OPS];        /* 0, or the code the slot returns */
    /* Called first thing in every slot but init and destroy (any thread,
     * the core's locks held as for the slot): a test forces an
     * interleaving with it (an owner killed inside a call, ...).  Set
     * with fake_backend_set_on_call(): other threads (the registry's
     * monitor) call in while a test sets and clears it. */
    _Atomic(FakeHook) on_call;
    void *_Atomic on_call_data;
    /* The same, called last thing in every such slot, after its work
     * (fake_backend_set_on_return()). */
    _Atomic(FakeHook) on_return;
    void *_Atomic on_return_data;
    gulong sleep_us[FAKE_N_OPS]; /* sleep inside the slot */
    int health;                  /* status health_check returns */

    /* Read by tests (atomics). */
    gint calls[FAKE_N_OPS];
    gint inside;        /* calls inside any slot now */
    gint inside_writes; /* write calls inside now */
    gint max_inside;
    gint max_inside_reads;
    gint max_inside_writes;
    gint violations;    /* locking the caps ask for was broken */

    /* Options as init saw them. */
    char *opt_a;
    char *opt_b;
    uint64_t opt_size;
    bool opt_flag;
    /* The metadata the last update_metadata call received (a ref). */
    GVariant *last_update;
    /* The last record register_entry received. */
    procreg_record last_record;
} FakeBackend;

typedef struct {
    procreg_backend *inner;
    char *inner_spec;
    uint64_t ttl_ms;
} FakeDeco;

extern const procreg_backend_ops fake_ops;
extern const procreg_backend_ops fake_pr_ops;
extern const procreg_backend_ops fake_ts_ops;
extern const procreg_backend_ops fake_mp_ops;
extern const procreg_backend_ops fake_own_ops;
extern const procreg_backend_ops fake_min_ops;
extern const procreg_backend_ops fake_deco_ops;

/* Register every table above with procreg_backend_register(). */
void fake_backend_register_all(void);

/* The fake instance initialised last (any table but the decorator), and
 * the decorator initialised last.  Valid until that instance is closed. */
FakeBackend *fake_backend_last(void);
FakeDeco *fake_deco_last(void);

/* Set @fb's on_call hook to @fn with @data, or clear it (@fn NULL).  Set
 * it only while it is clear: a call that loaded the old hook may read
 * the new data. */
void fake_backend_set_on_call(FakeBackend *fb, FakeHook fn, void *data);

/* The same for the on_return hook. */
void fake_backend_set_on_return(FakeBackend *fb, FakeHook fn, void *data);

/* Total calls of every slot except init and destroy. */
int fake_backend_data_calls(FakeBackend *fb);

#endif
