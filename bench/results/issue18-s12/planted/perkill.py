#!/usr/bin/env python3
"""Per death in a kept threads history (history-run --keep): how many
registers invoked after the death was confirmed answered EEXISTS naming
the dead owner (the dead-holder violation), and how many keys the prober
found held by it right after the kill.  Usage: perkill.py DIR..."""
import glob, os, re, sys

for d in sys.argv[1:]:
    deaths = []
    for line in open(os.path.join(d, 'faults.log')):
        m = re.match(r'death owner=(\S+) inv=(\d+) res=(\d+)', line)
        if m:
            deaths.append((m.group(1), int(m.group(2)), int(m.group(3))))
    regs = []  # (client, inv, rc, holder)
    for f in glob.glob(os.path.join(d, 'client-*.log')):
        inv = {}
        for line in open(f):
            w = line.split()
            if w[0] == 'inv' and 'op=register' in line:
                inv[(w[1], w[2])] = int(w[3][2:])
            elif w[0] == 'res' and (w[1], w[2]) in inv:
                rc = int(w[4][3:])
                holder = w[5][6:] if len(w) > 5 and w[5].startswith('owner=') else None
                regs.append((w[1], inv.pop((w[1], w[2])), rc, holder))
    hits = []
    for owner, dinv, dres in deaths:
        n = sum(1 for c, i, rc, h in regs if i > dres and rc == -4 and h == owner)
        hits.append(n)
    print('%s: %d deaths, violations per death %s, deaths caught %d' %
          (os.path.basename(d), len(deaths), hits, sum(1 for n in hits if n)))
