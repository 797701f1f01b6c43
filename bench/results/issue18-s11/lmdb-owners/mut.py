#!/usr/bin/env python3
# usage: mut.py NAME FILE OLD NEW  -- patch, rebuild test-lmdb-format, run, restore
import sys, subprocess, shutil
name, path, old, new = sys.argv[1:5]
root='/work/wt/lmdb-owners/'
f=root+path
s=open(f).read()
assert s.count(old)==1, (name, s.count(old))
shutil.copy(f, '/tmp/lo-mut/orig')
open(f,'w').write(s.replace(old,new))
try:
    b=subprocess.run(['nice','-n','10','ninja','-C',root+'build','tests/lmdb/test-lmdb-format'],capture_output=True,text=True)
    if b.returncode: print(name,'BUILD FAILED',b.stdout[-2000:]); sys.exit(1)
    r=subprocess.run(['timeout','120',root+'build/tests/lmdb/test-lmdb-format','--keep-going'],capture_output=True,text=True)
    lines=[l for l in r.stdout.splitlines() if l.startswith('not ok') or l.startswith('ok')]
    bad=[l for l in lines if l.startswith('not ok')]
    print(f"{name}: rc={r.returncode} failing: {[l.split(' ',3)[-1] for l in bad]}")
    errs=[l for l in (r.stdout+r.stderr).splitlines() if 'ERROR' in l or 'assert' in l.lower()]
    for e in errs[:4]: print('   ', e[:220])
finally:
    shutil.copy('/tmp/lo-mut/orig', f)
