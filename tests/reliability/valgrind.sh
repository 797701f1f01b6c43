#!/bin/sh
# exe_wrapper of the 'valgrind' test setup (tests/reliability/meson.build):
# runs each compiled test program under memcheck, failing it on any
# memory error and on any definite or indirect leak; scripts (the python
# symbol checks) run as they are.
#
#   meson test -C build --setup valgrind --suite core --suite compliance
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prog=$1
if [ ! -f "$prog" ] || [ "$(head -c 4 "$prog" | od -An -c | tr -d ' ')" != '177ELF' ]; then
    exec "$@"
fi
supp=
for f in /usr/share/glib-2.0/valgrind/glib.supp "$here/valgrind.supp"; do
    [ -f "$f" ] && supp="$supp --suppressions=$f"
done
# somalloc=nouserintercepts: a test that defines malloc itself (core-alloc
# counts allocations so) keeps its own; it forwards to glibc's, which
# memcheck replaces.
# --child-silent-after-fork: a child forked without exec (a test's short-
# lived "dead pid" or sleeping owner) has only the forking thread, so what
# the parent's other threads hold looks lost to a leak check at its _exit.
# shellcheck disable=SC2086
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --num-callers=30 --child-silent-after-fork=yes --soname-synonyms=somalloc=nouserintercepts $supp "$@"
