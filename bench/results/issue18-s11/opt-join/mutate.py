# Mutations of backends/optimized/groups.c for NOTES.md: python3 mutate.py NAME writes
# the committed groups.c with mutation NAME into the worktree (run from the
# repository root; restore with git checkout backends/optimized/groups.c).
import subprocess, sys
p='backends/optimized/groups.c'
s=subprocess.run(['git','show','HEAD:backends/optimized/groups.c'],capture_output=True,text=True,check=True).stdout
m=sys.argv[1]
R={
 # M1: group_find ignores the count
 'M1-find-ignores-count': ("""    joins = atomic_load_explicit(&s->member_joins, memory_order_acquire);""",
                            """    joins = 0;"""),
 # M2: the raise after the inner join
 'M2-raise-after-inner': ("""    atomic_fetch_add_explicit(&s->member_joins, 1, memory_order_seq_cst);
    rc = procreg_backend_group_join(s->inner, key, record, &m, error);""",
                          """    rc = procreg_backend_group_join(s->inner, key, record, &m, error);
    atomic_fetch_add_explicit(&s->member_joins, 1, memory_order_seq_cst);"""),
 # M3: a failed join does not mark the member index stale
 'M3-no-stale-mark': ("""        atomic_fetch_or_explicit(&s->member_joins, OPT_MEMBERS_STALE,
                                 memory_order_relaxed);
    }""", """    }"""),
 # M4: the rebuild does not clear the mark
 'M4-rebuild-keeps-mark': ("""        atomic_fetch_and_explicit(&s->member_joins, ~OPT_MEMBERS_STALE,
                                  memory_order_release);""", ""),
 # M5: group_find always forwards (no index)
 'M5-always-forward': ("""    if (G_UNLIKELY(joins != 0) &&""", """    if (true ||"""),
 # M7: the count lowered as soon as the inner join returned (before the
 # hook, so before the index update)
 'M7-lower-before-index': ('''    rc = procreg_backend_group_join(s->inner, key, record, &m, error);
    OPT_JOIN_HOOK(rc);''', '''    rc = procreg_backend_group_join(s->inner, key, record, &m, error);
    atomic_fetch_sub_explicit(&s->member_joins, 1, memory_order_release);
    OPT_JOIN_HOOK(rc);'''),
 'M7b-and-not-after': ('''    atomic_fetch_sub_explicit(&s->member_joins, 1, memory_order_release);
    procreg_opt_stripe_unlock(s, stripe);''', '''    procreg_opt_stripe_unlock(s, stripe);'''),
 # M6: a find trusts the index for presence (no re-read skip)
 'M6-no-reread-skip': ("""        if (rc == PROCREG_ENOTFOUND) {
            rc = 0;
            continue;
        }""", """        if (rc == PROCREG_ENOTFOUND) {
            rc = 0;
            m.id = id;
            m.metadata = g_variant_ref_sink(g_variant_new_parsed("{'role': <2>}"));
        }"""),
}
for one in m.split('+'):
    a,b=R[one]
    assert s.count(a)==1, one
    s=s.replace(a,b)
open(p,'w').write(s)
