/*
 * The members of a group in memory, shared by the in-process backends
 * (ghash, ckht): what a dispatch iterates without a lock and without a
 * copy, and the writer's indexes that make a join or a leave O(1) in the
 * group's size.  Hidden: compiled into the library, never installed.
 *
 * Layout.  A group's members live in a slot array (procreg_grp_array) in
 * join order (so in id order): a join appends, a leave empties its slot
 * (a hole).  A slot holds what a reader hands out (id, owner, metadata
 * pointer, join time) inline, so a dispatch walks contiguous memory and
 * never follows a pointer per member.  The writer keeps a record of its
 * own per member (procreg_grp_member: its slot, its owner's chain) that
 * readers never touch, and indexes that find a member by id (to leave
 * it) and a group's members by owner (to leave all of one process's),
 * each in O(1).  When the array is full, or more than half of its used
 * slots are holes, the writer builds a new one holding the live members
 * in the same order and publishes it: O(live) work every O(live)
 * changes, O(1) amortised.
 *
 * Readers (dispatch, pick, count) load the published array and read its
 * slots, taking no lock and copying each member out before using it.
 * The invariant that makes it safe, whatever the writer does meanwhile:
 *   (R1) a slot is written once, in full, before the release store that
 *        publishes it (the array's length, or the array), and never
 *        moves: no slot below the length is ever written again in that
 *        array, except its id, which a leave sets to 0 (a hole) with one
 *        atomic store.  A reader that reads a non-zero id thus reads the
 *        fields that id was published with: never a torn member, never
 *        one member's id with another's fields.  A reader loads the
 *        length once, so a slot the writer fills later is never read;
 *   (R2) an array, or the metadata a slot points to, is never freed while
 *        a reader may hold it: how that is ensured is the backend's
 *        reclamation mode:
 *          - PROCREG_GRP_EPOCH (ckht): arrays that go and the metadata
 *            references of members that left are handed to the backend's
 *            retire hook (its ck_epoch), and the writer changes the
 *            current array in place (appends, and holes);
 *          - PROCREG_GRP_REFCOUNT (ghash): a reader takes a reference on
 *            the array (procreg_grp_snapshot(), under a lock the backend
 *            holds against its writers); each array holds a reference on
 *            the metadata of each of its members; a writer never changes
 *            an array another reference holds: it builds a new one (copy
 *            on write) first.
 * What a reader sees: the members of the array it loaded, each slot once,
 * in order (slots never move within an array, and compaction builds
 * another array): every member present throughout is visited exactly
 * once; one that joined after the reader read the array's length is not;
 * one that left meanwhile may be (with the fields it joined with).
 *
 * Writers: one at a time per index (the backend's write lock).
 */
#ifndef PROCREG_GROUPS_MEMBER_SET_H
#define PROCREG_GROUPS_MEMBER_SET_H

#include <procreg/backend.h>

#include <stdatomic.h>

G_BEGIN_DECLS

typedef struct procreg_grp_chain procreg_grp_chain;

/* The writer's record of a member: readers never see it. */
typedef struct procreg_grp_member {
    uint64_t id;
    uint32_t slot; /* its index in the current array */
    struct procreg_grp_member *prev, *next; /* its owner's chain */
    procreg_grp_chain *chain;               /* its set and owner */
} procreg_grp_member;

/* A member as readers see it, inline in the array (R1). */
typedef struct {
    _Atomic uint64_t id; /* 0: a hole (the member left) */
    int64_t joined_at;
    procreg_owner owner;
    GVariant *metadata; /* a reference held by the array (R2), or NULL */
} procreg_grp_slot;

typedef struct {
    atomic_int refs;     /* REFCOUNT: the set's, and each snapshot's */
    uint32_t cap;
    _Atomic uint32_t len; /* slots used, holes included */
    /* cap slots, then the writer's cap procreg_grp_member pointers (each
     * slot's record; readers never read them). */
    procreg_grp_slot slot[];
} procreg_grp_array;

/* One group's members. */
typedef struct {
    _Atomic(procreg_grp_array *) array; /* NULL until the first join */
    atomic_size_t live;                 /* members now */
    uint32_t holes;                     /* writer */
} procreg_grp_set;

typedef enum { PROCREG_GRP_EPOCH, PROCREG_GRP_REFCOUNT } procreg_grp_mode;

/* EPOCH: call @free_fn on @p (an array or a member of @bytes) once no
 * reader can hold it. */
typedef void procreg_grp_retire_fn(void *p, void (*free_fn)(void *),
                                   size_t bytes, void *ctx);

/* The writer's side of every group of one backend instance. */
typedef struct procreg_grp_index procreg_grp_index;

procreg_grp_index *procreg_grp_index_new(procreg_grp_mode mode,
                                         procreg_grp_retire_fn *retire,
                                         void *ctx);
/* Every set must have been cleared (procreg_grp_set_clear()) first. */
void procreg_grp_index_free(procreg_grp_index *ix);

/* Add a member of id @id for @record (owner, metadata, join time) to
 * @set: published to readers, indexed for the writer.  Returns the
 * writer's record of it, or NULL when out of memory (nothing changed). */
procreg_grp_member *procreg_grp_add(procreg_grp_index *ix,
                                    procreg_grp_set *set,
                                    const procreg_record *record,
                                    uint64_t id);
/* Remove @m from @set: empty its slot, hand its metadata to reclamation
 * (R2) and free @m, the writer's record, at once (no reader holds it).
 * false when out of memory (REFCOUNT: the copy a snapshot forces; nothing
 * changed).  EPOCH never fails. */
bool procreg_grp_remove(procreg_grp_index *ix, procreg_grp_set *set,
                        procreg_grp_member *m);
/* @set has no member left and goes away: let its array go (EPOCH:
 * retired; REFCOUNT: freed with the last snapshot). */
void procreg_grp_set_retire(procreg_grp_index *ix, procreg_grp_set *set);
/* The group_leave slot (backend.h) on @set (NULL: the group is absent)
 * of group @key: remove member @member_id, or with 0 every member of
 * @owner, each copied to @removed (may be NULL) first.  Returns how many
 * went, PROCREG_EPERM (a member of another owner than @owner; nothing
 * changed) or PROCREG_ENOMEM (REFCOUNT, after removing what it could),
 * with @error set for those two. */
int procreg_grp_leave(procreg_grp_index *ix, procreg_grp_set *set,
                      const procreg_key *key, uint64_t member_id,
                      const procreg_owner *owner, GArray *removed,
                      GError **error);
/* Free @set's members and array now, at the backend's destroy: no reader
 * or snapshot may hold them, and @ix is freed next. */
void procreg_grp_set_destroy(procreg_grp_set *set);

/* The member of id @id, in whatever set, or NULL (writer). */
procreg_grp_member *procreg_grp_find(procreg_grp_index *ix, uint64_t id);
/* Whether @m is a member of @set (writer). */
bool procreg_grp_in_set(const procreg_grp_member *m,
                        const procreg_grp_set *set);
/* The first of @owner's members in @set, or NULL; the next is ->next
 * (writer; removing the one in hand is fine once its next was read). */
procreg_grp_member *procreg_grp_owner_first(procreg_grp_index *ix,
                                            const procreg_grp_set *set,
                                            const procreg_owner *owner);

/* Copy @m out for a caller (metadata referenced; ns, group NULL; the
 * writer). */
void procreg_grp_member_copy(const procreg_grp_member *m, procreg_member *out);
/* Append a copy of each member of @set to @out, in id order (a reader:
 * inside the backend's read protection, or the writer). */
void procreg_grp_set_append(const procreg_grp_set *set, GArray *out);

/* Readers */

static inline size_t procreg_grp_live(const procreg_grp_set *set)
{
    return atomic_load_explicit(&set->live, memory_order_relaxed);
}

/* The published array (acquire), or NULL. */
static inline procreg_grp_array *procreg_grp_load(const procreg_grp_set *set)
{
    return atomic_load_explicit(&((procreg_grp_set *)set)->array,
                                memory_order_acquire);
}

/* Call @fn for each member of @a in order until it returns false; the
 * number of calls. */
size_t procreg_grp_array_foreach(const procreg_grp_array *a,
                                 procreg_member_fn fn, gpointer user_data);
/* Copy one member of @a, as the group_pick slot says, to @out (metadata
 * referenced; ns, group NULL); false when @a has none. */
bool procreg_grp_array_pick(const procreg_grp_array *a, bool round_robin,
                            uint64_t arg, procreg_member *out);

/* REFCOUNT: a reference on @set's array for a reader that will iterate it
 * without the backend's lock (take it under the lock), or NULL; release
 * it, with no lock needed, with procreg_grp_snapshot_release(). */
procreg_grp_array *procreg_grp_snapshot(const procreg_grp_set *set);
void procreg_grp_snapshot_release(procreg_grp_array *a);

/* Bytes held by members and arrays now (for memory_usage). */
size_t procreg_grp_index_bytes(const procreg_grp_index *ix);
/* Members and (set, owner) chains now. */
size_t procreg_grp_index_members(const procreg_grp_index *ix);

G_END_DECLS

#endif /* PROCREG_GROUPS_MEMBER_SET_H */
