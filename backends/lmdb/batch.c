/*
 * Group commit of registrations: the registrants that find the writer
 * lock taken have their registrations committed together, in one synced
 * write transaction, by whichever of them takes it next.
 *
 * The request area.  FILE-notify past its first page (changelog.c's
 * counter page) holds a header and BATCH_SLOTS fixed slots, mapped shared
 * by every writer of the file.  A registrant claims a free slot (CAS),
 * writes its request there (key, owner, metadata bytes) and publishes it
 * PENDING.  Then, until its slot is DONE, it tries the writer lock
 * without waiting for it (procreg_lmdb_writer_trylock()): with the lock
 * it leads; while another writer holds it, it sleeps on its slot's word
 * (a shared FUTEX_WAIT: the mapping is the file's, the same futex in
 * every process) for BATCH_WAIT_MS at most, and looks again.  The leader
 * applies every PENDING request, its own included, in one write
 * transaction, each in a nested transaction (a request that fails,
 * EEXISTS say, is aborted alone and sinks nothing else), commits once
 * (MDB_NOMETASYNC, as every writer: the pages flushed, the meta page
 * written), marks the slots COMMITTED, lets the lock go, flushes the
 * file (the next leader's transaction overlaps that flush), then marks
 * each DONE (its answer was written before the commit) and wakes its
 * registrant,
 * which takes the answer without the lock and frees the slot: a process
 * or thread answered by a batch never waits for the lock.  A request
 * that does not fit a slot, finds no free slot, or fails in a way the
 * solo path reports better (LMDB errors, a corrupt record, a failed
 * commit) goes the solo way: procreg_lmdb_write_txn(), as before.
 *
 * The slot word (64 bits, atomic): the state in bits 0-7, a sequence
 * that every change bumps in bits 8-31 (freeing included: it never
 * restarts, so a word read before is not its slot's next user's), the
 * registrant's pid in bits 32-63 (claimed with the state in one CAS, so
 * a slot's pid is never a former user's).  The futex is the low 32-bit
 * half, state and sequence; futex_word() finds its address whatever the
 * byte order.  Besides the pid, a slot records the registrant's ticket
 * (a number of its process's own, written before PENDING is published):
 * another thread of the same process may claim a slot freed under its
 * registrant, and only the ticket tells the registrant it is not its
 * request any more.
 *
 * Slot states and who moves them:
 *   FREE -> CLAIMED      registrant (CAS)
 *   CLAIMED -> PENDING   registrant, its request and ticket written (CAS
 *                        from the word it claimed)
 *   PENDING -> PENDING   whoever released the lock (nudge: the sequence
 *                        bumped, the registrant woken)
 *   PENDING -> FREE      registrant whose lock failed (CAS: withdrawn;
 *                        it reports the failure, nothing was applied)
 *   PENDING -> APPLIED   leader (CAS), the slot's txnid and the header's
 *                        applied_txnid already set to its transaction's id
 *   APPLIED -> COMMITTED leader after the commit, under the lock, when a
 *                        registrant asked for sync (its word kept)
 *   APPLIED -> DONE      leader after the commit, when none did, or the
 *                        commit failed (answer written before)
 *   COMMITTED -> DONE    leader, after its flush (lock let go): CAS from
 *                        the exact word it set, so a slot freed and
 *                        reused meanwhile is not touched
 *   COMMITTED -> DONE    registrant whose word stayed COMMITTED for a
 *                        whole sleep, after a flush of its own
 *   COMMITTED -> FREE    registrant whose own flush failed (it reports
 *                        the failure)
 *   APPLIED -> DONE      recovery: the env's last committed txnid reached
 *                        the slot's (the leader died after its commit)
 *   APPLIED -> PENDING   recovery: it did not (died before the commit)
 *   DONE -> FREE         registrant (CAS from the DONE word it read, its
 *                        answer taken); or a leader, when the registrant
 *                        is dead
 *   CLAIMED/PENDING -> FREE  leader, when the registrant is dead (its
 *                        request, never acknowledged, is dropped)
 *   COMMITTED -> FREE    leader, when the registrant is dead
 *   APPLIED/DONE -> same, pid 0  registrant whose lock failed while a
 *                        leader had its request, past UNKNOWN_MS
 *                        (abandoned: answered, then freed as a dead
 *                        registrant's)
 * The leader's and the recovery's moves are made under the lock, but
 * for COMMITTED -> DONE.
 *
 * A leader that judges a live registrant dead (procreg_owner_is_alive()
 * wrong: another pid namespace, say) frees its slot and wakes it (a
 * CLAIMED slot only when kill() finds no such pid at all).  The
 * registrant checks, each time it looks, that its slot still holds its
 * request (state past CLAIMED, its pid, its ticket); when not, it goes
 * solo, which re-runs the registration under the lock and reports the
 * truth: a request freed from CLAIMED or PENDING was never applied; one
 * freed from DONE was, and solo finds the registrant's own entry (same
 * owner, time and metadata), which ops.c answers as registered
 * (PROCREG_LMDB_SOLO_AGAIN); a re-run that cannot take the lock to look
 * says the outcome is unknown.  No registrant waits for an answer that
 * will not come.
 *
 * Invariant: a slot is answered DONE only when its change is durable —
 * by an mdb_env_sync() that began after its commit (the leader's after
 * the lock, the registrant's own, or the recovery's after a leader died
 * past its commit), or, for a batch of nosync registrants only, at once —
 * and applied at most
 * once: a request is applied only from PENDING inside the transaction
 * whose id its slot records, and APPLIED is resolved before any other
 * write transaction can begin (procreg_lmdb_batch_recover() runs in
 * procreg_lmdb_writer_lock() and _trylock(), under which every write
 * begins), so the id of an aborted transaction is never mistaken for a
 * commit.  A COMMITTED slot is answered only by a flush begun after it
 * was seen COMMITTED: its leader's (its commit came first), or its
 * registrant's; one freed from COMMITTED (a registrant judged dead)
 * makes its registrant flush before its solo re-run, which may find the
 * entry committed and write nothing (lost()).  So a leader that dies
 * after letting the lock go, or whose flush fails, holds up its
 * registrants for one sleep (BATCH_WAIT_MS), never loses an answer.
 *
 * Invariant: a registrant whose slot is not DONE never sleeps past a
 * live holder's release of the lock, nor longer than BATCH_WAIT_MS.
 * Whoever moves a slot to DONE (or back to PENDING) wakes it, and every
 * release of the lock is followed by a nudge of each PENDING slot
 * (procreg_lmdb_batch_nudge(), from procreg_lmdb_writer_unlock()).  A
 * registrant reads its word, then finds the lock taken, then sleeps only
 * while the word is what it read (FUTEX_WAIT compares it); the holder's
 * release comes after the failed try, and by then the slot was nudged
 * (the word changed), applied by a leader (which will answer it) or
 * answered: so a request published just after a leader collected its
 * batch is led by its registrant, nudged when that leader releases the
 * lock.  A holder that dies releases the lock (the kernel does) without a
 * nudge: then BATCH_WAIT_MS ends the sleep, the registrant takes the lock
 * and, under it, the recovery resolves what a dead leader left.  A
 * registrant whose try of the lock fails (an error, not "taken") reports
 * the failure only when it could withdraw its request; when a leader
 * took it (APPLIED), it waits for that leader's answer instead, and
 * after UNKNOWN_MS without one (that leader may have died, and the
 * recovery needs the lock) says the outcome is unknown.  Lockless
 * readers' read locks (writer.c) are never released with a nudge either:
 * a registrant that finds only readers holding the lock waits for it in
 * the kernel instead of on its slot (procreg_lmdb_writer_trylock()).
 *
 * Owns: the request area (its mapping, layout, states), leading a batch,
 * recovery after a dead leader, and the registrant's side.
 * Relies on: writer.c for the lock (and its nudge on release), readers.c
 * for the map, ops.c for the register step (and for answering a lost
 * answer's solo re-run), txn.c for map adoption and errors, changelog.c to wake
 * the watchers, liveness.c for whether a registrant lives.
 */
#include "lmdb-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAGIC 0x42475250u /* "PRGB" */
#define BATCH_VERSION 1
/* The area starts after FILE-notify's counter page. */
#define BATCH_OFFSET 4096
#define BATCH_SLOTS 64
#define SLOT_SIZE 1024
/* A registrant's longest sleep on its slot: how long a dead leader can
 * hold up the registrants waiting for it (they then take the lock). */
#define BATCH_WAIT_MS 100

enum {
    SLOT_FREE,
    SLOT_CLAIMED,
    SLOT_PENDING,
    SLOT_APPLIED,
    SLOT_DONE,
    SLOT_COMMITTED
};

/* Answers other than a procreg code: go the solo way; or the change was
 * committed by a leader that died, and its flush failed. */
#define RESULT_SOLO (-1)
#define RESULT_UNFLUSHED (-2)

typedef struct {
    uint64_t word; /* atomic: state, sequence, pid (see above) */
    /* The registrant's start time; atomic: a leader whose word is stale
     * may read it while the slot's next registrant writes it (the
     * leader's CAS then fails). */
    uint64_t requester_start;
    uint64_t txnid;           /* APPLIED: the transaction that applied it */
    /* The request. */
    int32_t owner_pid;
    uint32_t instance_id;
    uint64_t owner_start;
    int64_t registered_at;
    uint32_t key_len, meta_len; /* data: key bytes, then metadata bytes */
    uint32_t has_meta;
    uint32_t sync; /* the registrant's handles ask for durability=sync */
    /* The answer: a procreg code or RESULT_SOLO; with 0 the new entry's
     * revision, with PROCREG_EEXISTS the holder (its metadata in data
     * after the request's bytes). */
    int32_t result;
    int32_t cur_pid;
    uint32_t cur_has_meta;
    uint64_t cur_start;
    int64_t cur_registered_at;
    uint64_t cur_revision;
    uint32_t cur_meta_len;
    /* Which of its process's requests the slot holds (atomic): written
     * by the registrant before it publishes PENDING, read by it alone. */
    uint32_t ticket;
} slot_head;

#define SLOT_DATA (SLOT_SIZE - sizeof(slot_head))

typedef struct {
    slot_head h;
    uint8_t data[SLOT_DATA];
} batch_slot;

struct lmdb_batch_area {
    uint32_t magic;
    uint32_t version;
    uint64_t applied_txnid; /* nonzero: slots APPLIED, not yet resolved */
    uint8_t pad[48];
    batch_slot slots[BATCH_SLOTS];
};

#define AREA_SIZE sizeof(struct lmdb_batch_area)

#ifdef PROCREG_TEST_BATCH_HOOK
void (*procreg_lmdb_batch_hook)(const char *point);
#define HOOK(point)                                                           \
    do {                                                                      \
        if (procreg_lmdb_batch_hook != NULL)                                  \
            procreg_lmdb_batch_hook(point);                                   \
    } while (0)
int procreg_lmdb_batch_wait_ms = BATCH_WAIT_MS;
#define WAIT_MS procreg_lmdb_batch_wait_ms
/* Nonzero: a leader judges every other process's registrant dead. */
int procreg_lmdb_batch_judge_dead;
/* Nonzero: every take of the writer lock fails with this errno
 * (writer.c). */
int procreg_lmdb_batch_lock_errno;
/* >= 0: registrants look for a free slot from this one on. */
int procreg_lmdb_batch_first_slot = -1;
#else
#define HOOK(point) ((void)0)
#define WAIT_MS BATCH_WAIT_MS
#endif
/* How long a registrant whose request a leader took waits for its
 * answer while it cannot take the writer lock (which a dead leader's
 * recovery needs): then the outcome is unknown. */
#define UNKNOWN_MS (50 * WAIT_MS)

#define WORD(state, pid) ((uint64_t)(uint32_t)(pid) << 32 | (state))
#define WORD_STATE(w) ((uint32_t)((w) & 0xff))
#define WORD_PID(w) ((pid_t)(uint32_t)((w) >> 32))
#define WORD_SEQ 0xffffff00u

/* Word @w moved to @state: the same pid, the next sequence. */
static uint64_t word_next(uint64_t w, uint32_t state)
{
    return (w & ~(uint64_t)UINT32_MAX) |
           (((uint32_t)w + 0x100u) & WORD_SEQ) | state;
}

static uint64_t word_get(batch_slot *s)
{
    return __atomic_load_n(&s->h.word, __ATOMIC_ACQUIRE);
}

static uint32_t state_get(batch_slot *s)
{
    return WORD_STATE(word_get(s));
}

/* Move @s from state @from to @to, keeping its pid; false when it was
 * not in @from.  The word set goes to *@out. */
static bool state_move_word(batch_slot *s, uint32_t from, uint32_t to,
                            uint64_t *out)
{
    uint64_t w = word_get(s);
    while (WORD_STATE(w) == from) {
        *out = word_next(w, to);
        if (__atomic_compare_exchange_n(&s->h.word, &w, *out, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return true;
    }
    return false;
}

static bool state_move(batch_slot *s, uint32_t from, uint32_t to)
{
    uint64_t w;
    return state_move_word(s, from, to, &w);
}

/* The futex: the half of @s's word that holds its state and sequence. */
static uint32_t *futex_word(batch_slot *s)
{
    return (uint32_t *)(void *)&s->h.word +
           (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__);
}

/* Wake @s's registrant (one per slot), after a change of its word. */
static void wake(batch_slot *s)
{
    syscall(SYS_futex, futex_word(s), FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Sleep while @s's word is @w (its futex half), WAIT_MS at most. */
static void sleep_on(batch_slot *s, uint64_t w)
{
    struct timespec t = {WAIT_MS / 1000, (long)(WAIT_MS % 1000) * 1000000L};
    syscall(SYS_futex, futex_word(s), FUTEX_WAIT, (uint32_t)w, &t, NULL, 0);
}

/* Move @s from @from to DONE and wake its registrant. */
static void answer(batch_slot *s, uint32_t from)
{
    if (state_move(s, from, SLOT_DONE))
        wake(s);
}

/* Word @w freed: no pid, the next sequence (never reset, so a word
 * seen before is not mistaken for the slot's next user's). */
static uint64_t word_freed(uint64_t w)
{
    return word_next(w, SLOT_FREE) & UINT32_MAX;
}

/* Free @s if its word is still @w. */
static bool slot_free(batch_slot *s, uint64_t w)
{
    return __atomic_compare_exchange_n(&s->h.word, &w, word_freed(w), false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* COMMITTED word @w of @s -> DONE (in *@done), only from that exact word:
 * a slot freed or answered meanwhile is not touched. */
static bool slot_done(batch_slot *s, uint64_t w, uint64_t *done)
{
    *done = word_next(w, SLOT_DONE);
    return __atomic_compare_exchange_n(&s->h.word, &w, *done, false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Without an area (no room to allocate it on a full disk) every
 * registration of this process goes solo.  Another process's area is
 * already allocated, so this process cannot miss one a dead leader left
 * behind: allocating an allocated range needs no room.  The mapping has
 * an open file description of its own: one shared with the writer lock
 * would keep the lock held by whatever maps it (a forked child). */
void procreg_lmdb_batch_open(lmdb_env *env)
{
    char *path = g_strconcat(env->path, NOTIFY_SUFFIX, NULL);
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    g_free(path);
    if (fd < 0)
        return;
    /* Allocated now: touching a hole of a full disk's file through a
     * mapping would raise SIGBUS. */
    void *p = posix_fallocate(fd, BATCH_OFFSET, AREA_SIZE) != 0
                  ? MAP_FAILED
                  : mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                         fd, BATCH_OFFSET);
    close(fd);
    if (p == MAP_FAILED)
        return;
    struct lmdb_batch_area *a = p;
    uint32_t zero = 0;
    if (__atomic_compare_exchange_n(&a->magic, &zero, BATCH_MAGIC, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        __atomic_store_n(&a->version, BATCH_VERSION, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&a->magic, __ATOMIC_SEQ_CST) != BATCH_MAGIC) {
        /* Not ours (damaged): registrations go solo. */
        munmap(p, AREA_SIZE);
        return;
    }
    env->batch = a;
}

void procreg_lmdb_batch_close(lmdb_env *env)
{
    if (env->batch != NULL)
        munmap(env->batch, AREA_SIZE);
    env->batch = NULL;
}

unsigned int procreg_lmdb_batch_slots_used(lmdb_env *env)
{
    unsigned int n = 0;
    for (int i = 0; env->batch != NULL && i < BATCH_SLOTS; i++)
        n += state_get(&env->batch->slots[i]) != SLOT_FREE;
    return n;
}

void procreg_lmdb_batch_recover(lmdb_env *env)
{
    struct lmdb_batch_area *a = env->batch;
    if (a == NULL)
        return;
    uint64_t t = __atomic_load_n(&a->applied_txnid, __ATOMIC_ACQUIRE);
    if (t == 0)
        return;
    procreg_lmdb_map_enter(env);
    MDB_envinfo info;
    mdb_env_info(env->mdb, &info);
    bool committed = info.me_last_txnid >= t;
    /* The dead leader may have died before its commit's flush ended:
     * flush before anyone is answered. */
    bool flushed = committed && mdb_env_sync(env->mdb, 1) == 0;
    procreg_lmdb_map_leave(env);
    /* Counted before anyone is answered: an answered registrant may read
     * the figures at once (another thread of this process recovers). */
    g_atomic_pointer_add(&env->batch_recoveries, 1);
    for (int i = 0; i < BATCH_SLOTS; i++) {
        batch_slot *s = &a->slots[i];
        if (state_get(s) != SLOT_APPLIED || s->h.txnid != t)
            continue;
        if (committed && !flushed)
            s->h.result = RESULT_UNFLUSHED;
        /* Not committed: PENDING again, for the next leader. */
        state_move(s, SLOT_APPLIED, committed ? SLOT_DONE : SLOT_PENDING);
        wake(s);
    }
    __atomic_store_n(&a->applied_txnid, 0, __ATOMIC_RELEASE);
    if (committed)
        procreg_lmdb_notify_commit(env);
}

void procreg_lmdb_batch_nudge(lmdb_env *env)
{
    for (int i = 0; env->batch != NULL && i < BATCH_SLOTS; i++) {
        batch_slot *s = &env->batch->slots[i];
        uint64_t w = word_get(s);
        /* A failed CAS: another nudge, or a leader took the request. */
        if (WORD_STATE(w) == SLOT_PENDING &&
            __atomic_compare_exchange_n(&s->h.word, &w,
                                        word_next(w, SLOT_PENDING), false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            wake(s);
    }
}

/* ---- the leader ---- */

/* Whether the registrant of @s (in state word @w) lives.  A CLAIMED
 * slot's start time may not be written yet: its pid alone decides (a
 * reused pid only keeps the slot longer). */
static bool requester_alive(lmdb_env *env, batch_slot *s, uint64_t w)
{
    procreg_owner o = {WORD_PID(w), 0};
    if (o.pid <= 0)
        return false; /* abandoned (procreg_lmdb_batch_register()) */
    if (o.pid == env->self.pid)
        return true;
#ifdef PROCREG_TEST_BATCH_HOOK
    if (procreg_lmdb_batch_judge_dead)
        return false;
#endif
    if (WORD_STATE(w) == SLOT_CLAIMED)
        return kill(o.pid, 0) == 0 || errno != ESRCH;
    o.start_time = __atomic_load_n(&s->h.requester_start, __ATOMIC_RELAXED);
    return procreg_lmdb_owner_alive(env, &o);
}

/* A request whose bytes hold a well-formed key and fit its slot. */
static bool request_valid(const batch_slot *s)
{
    size_t ns_len;
    return s->h.key_len <= SLOT_DATA &&
           s->h.meta_len <= SLOT_DATA - s->h.key_len &&
           procreg_lmdb_key_split(s->data, s->h.key_len, &ns_len);
}

/* Apply slot @s in @parent through a nested transaction; its answer goes
 * to the slot (RESULT_SOLO when the nested transaction was undone). */
static void apply_one(lmdb_env *env, MDB_txn *parent, batch_slot *s,
                      wstate *w)
{
    register_req req = {
        .key = {s->h.key_len, s->data},
        .owner = {s->h.owner_pid, s->h.owner_start},
        .registered_at = s->h.registered_at,
        .has_meta = s->h.has_meta != 0,
        .meta = s->data + s->h.key_len,
        .meta_len = s->h.meta_len,
        .instance_id = s->h.instance_id,
    };
    s->h.result = RESULT_SOLO;
    MDB_txn *child;
    if (!request_valid(s) || mdb_txn_begin(env->mdb, parent, 0, &child) != 0)
        return;
    wstate before = *w;
    w->origin_pid = WORD_PID(word_get(s));
    int rc = procreg_lmdb_register_step(env, child, &req, w);
    w->origin_pid = 0;
    size_t room = SLOT_DATA - s->h.key_len - s->h.meta_len;
    bool ok = w->mdb_rc == 0 && w->corrupt == NULL &&
              (rc != PROCREG_EEXISTS || req.held.meta_len <= room);
    if (ok) {
        const raw_entry *e = &req.held;
        s->h.cur_pid = e->owner.pid;
        s->h.cur_start = e->owner.start_time;
        s->h.cur_registered_at = e->registered_at;
        s->h.cur_revision = e->revision;
        s->h.cur_has_meta = e->has_meta;
        s->h.cur_meta_len = 0;
        if (rc == PROCREG_EEXISTS) {
            memcpy(s->data + s->h.key_len + s->h.meta_len, e->meta,
                   e->meta_len);
            s->h.cur_meta_len = (uint32_t)e->meta_len;
        }
        ok = mdb_txn_commit(child) == 0;
        child = NULL;
    }
    if (ok) {
        s->h.result = rc;
        return;
    }
    /* Undone: the solo path runs it again and reports what went wrong. */
    if (child != NULL)
        mdb_txn_abort(child);
    g_free(w->corrupt);
    *w = before;
}

/* Collect the PENDING requests of live registrants into @idx (freeing
 * the slots of dead ones, and waking them: a registrant judged dead
 * wrongly then finds its slot gone and goes solo); their number. */
static int collect(lmdb_env *env, int *idx)
{
    int n = 0;
    for (int i = 0; i < BATCH_SLOTS; i++) {
        batch_slot *s = &env->batch->slots[i];
        uint64_t w = word_get(s);
        uint32_t st = WORD_STATE(w);
        if (st == SLOT_FREE || st == SLOT_APPLIED)
            continue;
        if (!requester_alive(env, s, w)) {
            if (slot_free(s, w)) {
                g_atomic_pointer_add(&env->batch_dropped, 1);
                wake(s);
            }
        } else if (st == SLOT_PENDING) {
            idx[n++] = i;
        }
    }
    return n;
}

/* What a leader does after letting the writer lock go: flush the file
 * and answer the slots its commit moved to COMMITTED (their words). */
typedef struct {
    int n;
    int idx[BATCH_SLOTS];
    uint64_t word[BATCH_SLOTS];
    bool notify;
} lead_rest;

/* Under the writer lock: apply every PENDING request in one transaction
 * and answer each, or, when the commit must be flushed first, move it to
 * COMMITTED for lead_finish() (@rest).  Afterwards no slot collected is
 * left PENDING or APPLIED. */
static void lead(lmdb_env *env, lead_rest *rest)
{
    struct lmdb_batch_area *a = env->batch;
    HOOK("lead");
    int idx[BATCH_SLOTS];
    int n = collect(env, idx);
    HOOK("collected");
    MDB_txn *txn = NULL;
    int rc = 0;
    do {
        procreg_lmdb_map_enter(env);
        rc = mdb_txn_begin(env->mdb, NULL, 0, &txn);
        if (rc != 0)
            procreg_lmdb_map_leave(env);
    } while (rc == MDB_MAP_RESIZED && procreg_lmdb_map_adopt(env) == 0);
    int taken = 0;
    bool want_sync = false;
    uint64_t t = rc == 0 ? mdb_txn_id(txn) : 0;
    if (rc == 0)
        __atomic_store_n(&a->applied_txnid, t, __ATOMIC_RELEASE);
    for (int j = 0; j < n; j++) {
        batch_slot *s = &a->slots[idx[j]];
        s->h.txnid = t;
        s->h.result = RESULT_SOLO;
        if (rc != 0) {
            answer(s, SLOT_PENDING); /* solo, which reports the failure */
        } else if (state_move(s, SLOT_PENDING, SLOT_APPLIED)) {
            idx[taken++] = idx[j]; /* else withdrawn meanwhile */
            want_sync |= s->h.sync != 0;
        }
    }
    if (rc != 0)
        return;
    wstate w = {0};
    for (int j = 0; j < taken; j++)
        apply_one(env, txn, &a->slots[idx[j]], &w);
    HOOK("applied");
    int commit_rc = w.dirty ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), 0);
    HOOK("committed");
    procreg_lmdb_map_leave(env);
    /* The commit (MDB_NOMETASYNC) wrote its meta page unflushed: a sync
     * registrant's answer waits for lead_finish()'s flush, even when a
     * nosync handle leads.  A batch that wrote nothing (EEXISTS each)
     * flushes too: the holders it answers with may be another writer's
     * commit not flushed yet. */
    bool flush = commit_rc == 0 && want_sync;
    g_atomic_pointer_add(&env->batch_commits, 1); /* before the answers */
    g_atomic_pointer_add(&env->batch_requests, taken);
    for (int j = 0; j < taken; j++) {
        batch_slot *s = &a->slots[idx[j]];
        if (commit_rc != 0)
            s->h.result = RESULT_SOLO; /* nothing was applied */
        if (!flush)
            answer(s, SLOT_APPLIED);
        else if (state_move_word(s, SLOT_APPLIED, SLOT_COMMITTED,
                                 &rest->word[rest->n]))
            rest->idx[rest->n++] = idx[j];
    }
    __atomic_store_n(&a->applied_txnid, 0, __ATOMIC_RELEASE);
    if (commit_rc == 0 && w.events > 0) {
        if (flush)
            rest->notify = true;
        else
            procreg_lmdb_notify_commit(env);
    }
}

/* After lead(), the writer lock let go: flush, then answer each slot
 * still in the COMMITTED word lead() set (a word that changed is not
 * this leader's to answer any more: freed as a dead registrant's, or
 * abandoned).  False when the flush failed: the slots stay COMMITTED and
 * their registrants flush themselves (await_answer()). */
static bool lead_finish(lmdb_env *env, lead_rest *rest)
{
    if (rest->n == 0 && !rest->notify)
        return true;
    HOOK("unlocked");
    bool flushed = procreg_lmdb_sync(env) == 0;
    for (int j = 0; flushed && j < rest->n; j++) {
        batch_slot *s = &env->batch->slots[rest->idx[j]];
        uint64_t done;
        if (slot_done(s, rest->word[j], &done))
            wake(s);
    }
    if (rest->notify)
        procreg_lmdb_notify_commit(env);
    return flushed;
}

/* ---- the registrant ---- */

/* This process's request tickets: a slot's ticket tells which of the
 * process's requests it holds (wrapping needs 2^32 requests of one
 * process while one registrant waits). */
static uint32_t tickets;

/* A free slot, claimed for this process (its word in @claimed); NULL
 * when none. */
static batch_slot *claim(lmdb_env *env, uint64_t *claimed)
{
    guint start = g_direct_hash(&start) >> 4;
#ifdef PROCREG_TEST_BATCH_HOOK
    if (procreg_lmdb_batch_first_slot >= 0)
        start = (guint)procreg_lmdb_batch_first_slot;
#endif
    for (int k = 0; k < BATCH_SLOTS; k++) {
        batch_slot *s = &env->batch->slots[(start + k) % BATCH_SLOTS];
        uint64_t w = word_get(s);
        *claimed = word_next(w, SLOT_CLAIMED) | WORD(0, env->self.pid);
        if (WORD_STATE(w) == SLOT_FREE &&
            __atomic_compare_exchange_n(&s->h.word, &w, *claimed, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return s;
    }
    return NULL;
}

/* Whether @s, whose word is @w, still holds this process's request
 * @ticket.  A leader that judged its registrant dead may have freed the
 * slot, and another thread of this process (the same pid) claimed it
 * since: the ticket tells them apart.  It is read after the word, whose
 * publication (CLAIMED -> PENDING) comes after its ticket's write; a
 * published request is never CLAIMED again. */
static bool holds(lmdb_env *env, batch_slot *s, uint64_t w, uint32_t ticket)
{
    uint32_t st = WORD_STATE(w);
    return st != SLOT_FREE && st != SLOT_CLAIMED &&
           WORD_PID(w) == env->self.pid &&
           __atomic_load_n(&s->h.ticket, __ATOMIC_RELAXED) == ticket;
}

/* The answer in DONE slot @s; RESULT_SOLO when the holder's metadata
 * cannot be decoded here (the solo path reports it). */
static int take_answer(batch_slot *s, const register_req *req,
                       GVariant *metadata, procreg_entry *current)
{
    int rc = s->h.result;
    if (rc == 0 && current != NULL) {
        current->owner = req->owner;
        current->metadata = metadata ? g_variant_ref(metadata) : NULL;
        current->registered_at = req->registered_at;
        current->revision = s->h.cur_revision;
    } else if (rc == PROCREG_EEXISTS) {
        raw_entry held = {
            .owner = {s->h.cur_pid, s->h.cur_start},
            .registered_at = s->h.cur_registered_at,
            .revision = s->h.cur_revision,
            .has_meta = s->h.cur_has_meta != 0,
            .meta = s->data + s->h.key_len + s->h.meta_len,
            .meta_len = s->h.cur_meta_len,
        };
        const char *why;
        if (!procreg_lmdb_fill_entry(&held, current, &why))
            rc = RESULT_SOLO;
    }
    return rc;
}

/* Withdraw request @ticket while no leader has taken it (PENDING ->
 * FREE): then it is never applied. */
static bool withdraw(lmdb_env *env, batch_slot *s, uint32_t ticket)
{
    for (;;) {
        uint64_t w = word_get(s);
        if (WORD_STATE(w) != SLOT_PENDING || !holds(env, s, w, ticket))
            return false;
        if (slot_free(s, w))
            return true;
    }
}

/* await_answer()'s answer when @s no longer holds the request. */
#define AWAIT_LOST 1
/* flush_self()'s answer when the slot's word moved meanwhile. */
#define AWAIT_AGAIN 2

/* COMMITTED slot @s (word @w), whose leader has not answered it: flush
 * the file (the commit came before the slot was COMMITTED, so before
 * this flush began) and answer it here.  0 with its DONE word in @done;
 * AWAIT_AGAIN when the word moved (its leader answered, or it was
 * freed); or the flush's failure, the slot freed. */
static int flush_self(lmdb_env *env, batch_slot *s, uint64_t w,
                      uint64_t *done, GError **error)
{
    HOOK("flush-self");
    int err = procreg_lmdb_sync(env);
    if (err == 0)
        return slot_done(s, w, done) ? 0 : AWAIT_AGAIN;
    if (!slot_free(s, w))
        return AWAIT_AGAIN;
    return procreg_set_error(error, PROCREG_EBACKEND,
                             "lmdb registry '%s': the registration was "
                             "committed, but flushing it to disk failed, "
                             "so a crash may undo it: %s", env->path,
                             mdb_strerror(err));
}

/* Wait until @s holds the answer to request @ticket (DONE, its word in
 * @done): answered by a leader, or by this registrant leading once it
 * takes the writer lock (batch.c's second invariant).  0; AWAIT_LOST;
 * or the lock's failure (in @error): at once when the request could be
 * withdrawn (nothing was applied), else only after UNKNOWN_MS, when the
 * leader that took it may have died (its outcome unknown). */
static int await_answer(lmdb_env *env, batch_slot *s, uint32_t ticket,
                        uint64_t *done, GError **error)
{
    gint64 give_up = 0;
    uint64_t committed_seen = 0;
    for (;;) {
        uint64_t w = word_get(s);
        if (!holds(env, s, w, ticket))
            return AWAIT_LOST;
        if (WORD_STATE(w) == SLOT_DONE) {
            *done = w;
            return 0;
        }
        if (WORD_STATE(w) == SLOT_COMMITTED) {
            /* Its leader flushes and answers it once it let the lock
             * go.  A word unchanged after a whole sleep (that leader
             * died, or its flush failed): flush here instead. */
            if (w != committed_seen) {
                committed_seen = w;
                HOOK("wait-flush");
                sleep_on(s, w);
                continue;
            }
            int rc = flush_self(env, s, w, done, error);
            if (rc != AWAIT_AGAIN)
                return rc;
            continue;
        }
        GError *local = NULL;
        int rc = procreg_lmdb_writer_trylock(env, &local);
        if (rc == 0) {
            HOOK("locked");
            lead_rest rest = {0};
            /* PENDING or DONE: the lock's recovery resolved APPLIED. */
            if (state_get(s) == SLOT_PENDING)
                lead(env, &rest);
            procreg_lmdb_writer_unlock(env);
            if (!lead_finish(env, &rest))
                committed_seen = word_get(s); /* flush at once, and fail */
            continue;
        }
        if (rc == PROCREG_LMDB_BUSY) {
            HOOK("wait");
            sleep_on(s, w);
            continue;
        }
        if (withdraw(env, s, ticket)) {
            g_propagate_error(error, local);
            return rc;
        }
        /* A leader took the request (or the slot was lost: the next
         * look tells): its answer will come, unless that leader died,
         * whose recovery needs the lock. */
        HOOK("lock-failed");
        gint64 now = g_get_monotonic_time();
        if (give_up == 0) {
            give_up = now + UNKNOWN_MS * (gint64)1000;
        } else if (now >= give_up && state_get(s) != SLOT_DONE) {
            rc = procreg_set_error(
                error, PROCREG_EBACKEND,
                "lmdb registry '%s': whether the registration was committed "
                "is unknown: a writer took it into its transaction and did "
                "not answer within %d ms, and the writer lock, needed to "
                "recover from that writer's death, fails (%s)",
                env->path, UNKNOWN_MS, local->message);
            g_error_free(local);
            return rc;
        }
        g_error_free(local);
        sleep_on(s, w);
    }
}

/* Give up request @ticket after the writer lock failed: left to the
 * leaders with no registrant (its pid 0), which answer it and then free
 * it as a dead registrant's. */
static void abandon(lmdb_env *env, batch_slot *s, uint32_t ticket)
{
    uint64_t w = word_get(s);
    while (holds(env, s, w, ticket) &&
           !__atomic_compare_exchange_n(&s->h.word, &w, w & UINT32_MAX, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

/* The slot was freed under its registrant (a leader judged it dead):
 * solo, which finds the truth under the lock.  A slot freed from CLAIMED
 * or PENDING was never applied.  One freed from DONE was applied and its
 * answer lost: solo then finds the registrant's own entry, which ops.c
 * answers as this registration (PROCREG_LMDB_SOLO_AGAIN). */
static int lost(lmdb_env *env, GError **error)
{
    g_atomic_pointer_add(&env->batch_solo, 1);
    /* Freed from COMMITTED, the request may be committed and not yet
     * flushed: the solo re-run, which may find it and write nothing,
     * answers after this flush. */
    int err = procreg_lmdb_durable(env) ? procreg_lmdb_sync(env) : 0;
    if (err != 0)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s': flushing a "
                                 "registration that may be committed "
                                 "failed: %s", env->path, mdb_strerror(err));
    return PROCREG_LMDB_SOLO_AGAIN;
}

int procreg_lmdb_batch_register(lmdb_env *env,
                                const register_req *req, GVariant *metadata,
                                procreg_entry *current,
                                GError **error)
{
    size_t key_len = req->key.mv_size;
    batch_slot *s = NULL;
    uint64_t claimed = 0;
    /* Half the data for the request: room for a holder's answer. */
    if (env->batch != NULL && !env->read_only &&
        key_len + req->meta_len <= SLOT_DATA / 2)
        s = claim(env, &claimed);
    if (s == NULL) {
        HOOK("solo");
        g_atomic_pointer_add(&env->batch_solo, 1);
        return PROCREG_LMDB_SOLO;
    }
    HOOK("claimed");
    __atomic_store_n(&s->h.requester_start, env->self.start_time,
                     __ATOMIC_RELAXED);
    s->h.owner_pid = req->owner.pid;
    s->h.owner_start = req->owner.start_time;
    s->h.registered_at = req->registered_at;
    s->h.instance_id = req->instance_id;
    s->h.has_meta = req->has_meta;
    s->h.sync = procreg_lmdb_durable(env);
    s->h.key_len = (uint32_t)key_len;
    s->h.meta_len = (uint32_t)req->meta_len;
    memcpy(s->data, req->key.mv_data, key_len);
    if (req->meta_len > 0)
        memcpy(s->data + key_len, req->meta, req->meta_len);
    uint32_t ticket = __atomic_add_fetch(&tickets, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->h.ticket, ticket, __ATOMIC_RELAXED);
    /* Published from the word claimed: a slot freed meanwhile is lost. */
    if (!__atomic_compare_exchange_n(&s->h.word, &claimed,
                                     word_next(claimed, SLOT_PENDING), false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        g_atomic_pointer_add(&env->batch_solo, 1);
        return PROCREG_LMDB_SOLO_AGAIN; /* never published, never applied */
    }
    HOOK("published");
    uint64_t done = 0;
    int rc = await_answer(env, s, ticket, &done, error);
    if (rc == AWAIT_LOST)
        return lost(env, error);
    if (rc != 0) {
        abandon(env, s, ticket);
        return rc;
    }
    rc = take_answer(s, req, metadata, current);
    if (!slot_free(s, done)) {
        /* Freed while the answer was read: it may be another's. */
        procreg_entry_clear(current);
        return lost(env, error);
    }
    if (rc == RESULT_SOLO) {
        procreg_entry_clear(current);
        return PROCREG_LMDB_SOLO;
    }
    if (rc == RESULT_UNFLUSHED)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s': the registration was "
                                 "committed by a writer that died, and "
                                 "flushing it failed", env->path);
    if (LMDB_ORDERED_EVENTS)
        procreg_lmdb_deliver(env); /* see changelog.c */
    return rc;
}
