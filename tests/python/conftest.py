"""Fixtures of the Python suite: procreg through its typelib (PyGObject).

Each test gets a registry on an LMDB file in its own directory and a
namespace of its own ("test-" and 16 hex digits), dropped when the test
ends, whatever it left: the isolation the C suites get from
procreg_namespace_new_test(), here as pytest fixtures.
"""
import gi

gi.require_version("Procreg", "0")
from gi.repository import GLib, Procreg  # noqa: E402
import pytest  # noqa: E402


def lmdb_spec(directory):
    # Brackets keep a path's commas and colons out of the spec's syntax.
    return f"lmdb:path=[{directory / 'registry.mdb'}]"


@pytest.fixture
def registry_dir(tmp_path):
    return tmp_path


@pytest.fixture
def registry(registry_dir):
    reg = Procreg.Registry.open(lmdb_spec(registry_dir))
    yield reg
    reg.close()


@pytest.fixture
def ns(registry):
    name = registry.new_test_namespace()
    yield name
    registry.drop_namespace(name)


def run_until(done, timeout_s=5.0):
    """Run the default main context until done() holds (its sources, such
    as event subscriptions, dispatch meanwhile); fail after timeout_s
    rather than hang."""
    context = GLib.MainContext.default()
    timed_out = []
    timer = GLib.timeout_add(int(timeout_s * 1000),
                             lambda: timed_out.append(True) and False)
    while not done() and not timed_out:
        context.iteration(True)
    if not timed_out:
        GLib.source_remove(timer)
    if not done():
        pytest.fail(f"not done within {timeout_s} s")
