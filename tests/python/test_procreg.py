"""procreg from Python through GObject Introspection: every call of the
binding API (include/procreg/gtypes.h) as a Python program makes it."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

from gi.repository import GLib, Procreg
import pytest

from conftest import lmdb_spec, run_until


def meta(**values):
    """a{sv} metadata from Python values: str, bool, int (int64)."""
    def variant(v):
        if isinstance(v, bool):
            return GLib.Variant("b", v)
        if isinstance(v, int):
            return GLib.Variant("x", v)
        return GLib.Variant("s", v)
    return GLib.Variant("a{sv}", {k: variant(v) for k, v in values.items()})


def raised(call, *args):
    """The GLib.Error that call(*args) raises."""
    with pytest.raises(GLib.Error) as info:
        call(*args)
    return info.value


# ---- opening ----

def test_open_specs(registry_dir):
    reg = Procreg.Registry.open("ghash")
    assert reg.get_spec() == "ghash"
    reg.close()
    assert reg.get_spec() is None
    e = raised(reg.count, None)
    assert (e.code, e.message) == (Procreg.Error.EINVAL, "the registry is closed")
    reg = Procreg.Registry.open(lmdb_spec(registry_dir))
    assert reg.get_spec().startswith("lmdb:")
    assert "ghash" in Procreg.backend_names()


def test_open_errors_carry_details():
    e = raised(Procreg.Registry.open, "no-such-backend")
    assert e.domain == "procreg-error-quark"
    assert e.matches(Procreg.error_quark(), Procreg.Error.EUNKNOWN_BACKEND)
    details = Procreg.ErrorDetails.from_error(e)
    assert "ghash" in details.get_alternatives()

    e = raised(Procreg.Registry.open, "ghash:nonsense=1")
    assert e.code == Procreg.Error.EINVAL
    assert Procreg.ErrorDetails.from_error(e).get_alternatives() is not None

    e = raised(Procreg.Registry.open, "ghash:[unclosed")
    assert e.code == Procreg.Error.EINVAL
    assert Procreg.ErrorDetails.from_error(e).get_position() >= 0


# ---- one key ----

def test_register_lookup_with_metadata(registry, ns):
    entry = registry.register(ns, "web", None, meta(port=8080, role="api",
                                                      tls=True))
    assert (entry.get_namespace(), entry.get_name()) == (ns, "web")
    assert entry.get_owner().get_pid() == os.getpid()
    assert entry.get_owner().get_alive()
    assert entry.get_revision() > 0
    assert entry.get_registered_at() > 0

    owner = registry.lookup(ns, "web")
    assert owner.get_pid() == os.getpid()
    assert owner.get_start_time() == Procreg.Owner.new_self().get_start_time()

    found = registry.lookup_entry(ns, "web")
    assert found.get_metadata().unpack() == {"port": 8080, "role": "api",
                                             "tls": True}
    key = Procreg.Key.make(ns, "web")
    assert (key.namespace(), key.name()) == (ns, "web")
    assert registry.lookup_key(key).get_pid() == os.getpid()


def test_update_and_unregister(registry, ns):
    first = registry.register(ns, "web", None, meta(port=1))
    rev = registry.update_metadata(ns, "web", meta(tls=True),
                                   Procreg.UpdateMode.MERGE, 0,
                                   Procreg.WriteFlags.DEFAULT)
    assert rev > first.get_revision()
    assert registry.lookup_entry(ns, "web").get_metadata().unpack() == {
        "port": 1, "tls": True}
    e = raised(registry.unregister, ns, "web", first.get_revision(),
               Procreg.WriteFlags.DEFAULT)
    assert e.code == Procreg.Error.ECONFLICT
    assert registry.unregister(ns, "web", rev, Procreg.WriteFlags.DEFAULT)
    assert raised(registry.lookup, ns, "web").code == Procreg.Error.ENOTFOUND


def test_list_count_find(registry, ns):
    for name, role in [("b", "db"), ("a", "web"), ("c", "web")]:
        registry.register(ns, name, None, meta(role=role))
    assert [e.get_name() for e in registry.list(ns)] == ["a", "b", "c"]
    assert registry.count(ns) == 3
    webs = registry.find(ns, "role", GLib.Variant("s", "web"))
    assert [e.get_name() for e in webs] == ["a", "c"]
    assert registry.find(ns, "role", GLib.Variant("s", "none")) == []
    infos = {i.get_namespace(): i.get_entries()
             for i in registry.list_namespaces()}
    assert infos[ns] == 3
    assert [e.get_name() for e in registry.list_owned(os.getpid())] == [
        "a", "b", "c"]


# ---- errors ----

def test_errors_are_exceptions_with_code_and_details(registry, ns):
    registry.register(ns, "web", None, None)
    e = raised(registry.register, ns, "web", None, None)
    assert e.domain == "procreg-error-quark"
    assert e.code == Procreg.Error.EEXISTS
    holder = Procreg.ErrorDetails.from_error(e).get_entry()
    assert (holder.get_name(), holder.get_owner().get_pid()) == (
        "web", os.getpid())

    e = raised(registry.lookup, ns, "wbe")
    assert e.code == Procreg.Error.ENOTFOUND
    assert Procreg.ErrorDetails.from_error(e).get_alternatives() == ["web"]

    e = raised(registry.register, ns, "", None, None)
    assert e.code == Procreg.Error.EINVAL
    assert "name" in e.message
    e = raised(registry.register, ns, "x", None, GLib.Variant("s", "no"))
    assert e.code == Procreg.Error.EINVAL
    assert raised(Procreg.Key.make, ns, "").code == Procreg.Error.EINVAL

    # PyGObject keeps no details with an exception: they are the thread's
    # last error's, so an earlier error never gets a later one's.
    e1 = raised(registry.lookup, ns, "one")
    raised(registry.register, ns, "web", None, None)
    stale = Procreg.ErrorDetails.from_error(e1)
    assert stale.get_entry() is None and not stale.get_alternatives()
    other = GLib.Error.new_literal(GLib.file_error_quark(), "x", 1)
    assert Procreg.ErrorDetails.from_error(other) is None


def test_entry_of_another_process_needs_force(registry, ns):
    child = subprocess.Popen(["sleep", "60"])
    try:
        owner = Procreg.Owner.new_for_pid(child.pid)
        registry.register(ns, "job", owner, None)
        e = raised(registry.unregister, ns, "job", 0,
                   Procreg.WriteFlags.DEFAULT)
        assert e.code == Procreg.Error.EPERM
        entry = Procreg.ErrorDetails.from_error(e).get_entry()
        assert entry.get_owner().get_pid() == child.pid
        assert registry.unregister(ns, "job", 0, Procreg.WriteFlags.FORCE)
    finally:
        child.kill()
        child.wait()
    e = raised(Procreg.Owner.new_for_pid, child.pid)
    assert e.code == Procreg.Error.ENOTALIVE


# ---- events, waiting ----

def test_subscribe_in_main_loop(registry, ns):
    seen = []
    sub = registry.subscribe(ns, None, lambda reg, event, *_: seen.append(
        event))
    registry.register(ns, "web", None, meta(port=80))
    registry.update_metadata(ns, "web", meta(port=81),
                             Procreg.UpdateMode.REPLACE, 0,
                             Procreg.WriteFlags.DEFAULT)
    registry.unregister(ns, "web", 0, Procreg.WriteFlags.DEFAULT)
    run_until(lambda: len(seen) == 3)
    assert [e.get_kind() for e in seen] == [
        Procreg.EventKind.REGISTERED, Procreg.EventKind.UPDATED,
        Procreg.EventKind.UNREGISTERED]
    assert seen[2].get_reason() == Procreg.EventReason.EXPLICIT
    assert seen[1].get_entry().get_metadata().unpack() == {"port": 81}
    assert [e.get_seq() for e in seen] == list(
        range(seen[0].get_seq(), seen[0].get_seq() + 3))
    assert all(e.get_entry().get_namespace() == ns for e in seen)
    assert registry.unsubscribe(sub)
    assert raised(registry.unsubscribe, sub).code == Procreg.Error.ENOTFOUND


def test_subscribe_from_a_position(registry, ns):
    start = registry.get_position()
    registry.register(ns, "a", None, None)
    registry.unregister(ns, "a", 0, Procreg.WriteFlags.DEFAULT)
    seen = []
    sub = registry.subscribe_from(ns, None, start,
                                  lambda reg, event, *_: seen.append(event))
    run_until(lambda: len(seen) == 2)
    assert [e.get_kind() for e in seen] == [
        Procreg.EventKind.REGISTERED, Procreg.EventKind.UNREGISTERED]
    assert start < seen[0].get_position() < seen[1].get_position()
    assert registry.unsubscribe(sub)
    e = raised(registry.subscribe_from, ns, None,
               registry.get_position() + 10 ** 6, lambda *_: None)
    assert e.code == Procreg.Error.ECOMPACTED


def test_wait_for_times_out_then_is_woken(registry, ns):
    e = raised(registry.wait_for, ns, "late", 50, None)
    assert e.code == Procreg.Error.ETIMEDOUT

    def register_later():
        GLib.usleep(50_000)
        registry.register(ns, "late", None, meta(ready=True))
    t = threading.Thread(target=register_later)
    t.start()
    entry = registry.wait_for(ns, "late", 5000, None)
    t.join()
    assert entry.get_metadata().unpack() == {"ready": True}


CHILD = textwrap.dedent("""
    import sys, gi
    gi.require_version("Procreg", "0")
    from gi.repository import GLib, Procreg
    reg = Procreg.Registry.open(sys.argv[1])
    reg.register(sys.argv[2], "worker", None,
                 GLib.Variant("a{sv}", {"pid": GLib.Variant("x", 0)}))
    print("registered", flush=True)
    sys.stdin.read()  # held until the parent kills it
""")


def test_sigkilled_child_entry_disappears(registry, registry_dir, ns):
    """A child process registers in the shared LMDB file and is killed:
    this process sees the entry go, reason owner_exited."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, lmdb_spec(registry_dir), ns],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "registered\n"
        entry = registry.wait_for(ns, "worker", 5000, None)
        assert entry.get_owner().get_pid() == child.pid
        gone = []
        # The registration's own event may come too, through the file's
        # change log, after wait_for() found the entry.
        registry.subscribe(ns, "worker", lambda reg, ev, *_: gone.append(
            ev.get_reason()) if ev.get_kind() ==
            Procreg.EventKind.UNREGISTERED else None)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        run_until(lambda: gone)
        assert gone == [Procreg.EventReason.OWNER_EXITED]
        assert raised(registry.lookup, ns, "worker").code == \
            Procreg.Error.ENOTFOUND
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# ---- namespaces, health, statistics ----

def test_test_namespaces_are_isolated(registry):
    a, b = registry.new_test_namespace(), registry.new_test_namespace()
    assert a != b and a.startswith("test-")
    registry.register(a, "svc", None, None)
    assert registry.count(b) == 0
    removed, atomic = registry.drop_namespace(a)
    assert (removed, atomic) == (1, True)
    assert registry.count(a) == 0


def test_health_and_stats(registry, ns):
    registry.register(ns, "web", None, None)
    health = registry.check_health()
    assert health.get_status() == Procreg.HealthStatus.OK
    assert health.get_backend() == "lmdb"
    assert "monitor" in health.get_details().unpack()
    stats = registry.get_stats().unpack()
    assert stats["namespaces"][ns] == 1
    text = registry.get_stats_prometheus()
    assert f'procreg_namespace_entries{{namespace="{ns}"}} 1' in text
