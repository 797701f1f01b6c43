"""procreg metrics --listen: the registry's figures over HTTP, scraped as
Prometheus would and read with prometheus_client's parser of the text
format (a malformed line fails the parse)."""
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from gi.repository import Procreg
import pytest

from conftest import lmdb_spec, run_until

prometheus = pytest.importorskip("prometheus_client.parser")

CLI = os.environ.get("PROCREG_CLI_METRICS")
pytestmark = pytest.mark.skipif(
    not CLI, reason="procreg was built without `metrics` (libsoup-3.0)")


@pytest.fixture
def metrics_url(registry_dir):
    server = subprocess.Popen(
        [CLI, "--backend", lmdb_spec(registry_dir), "metrics", "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        yield line.split()[1]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def scrape(url):
    """Every sample of the page, by (name, labels)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith(
            "text/plain; version=0.0.4")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in prometheus.text_string_to_metric_families(text)
            for s in family.samples}


def scrape_until(url, done, timeout_s=5.0):
    """Scrape until done(samples): the server counts events as they reach
    it, a moment after the change."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def test_metrics_endpoint(registry, ns, metrics_url):
    child = subprocess.Popen(["sleep", "60"])
    try:
        registry.register(ns, "web", None, None)
        registry.register(ns, "db", None, None)
        registry.register(ns, "job", Procreg.Owner.new_for_pid(child.pid),
                          None)
        latency = ("procreg_registry_wakeup_latency_seconds_count", ())
        samples = scrape_until(metrics_url,
                               lambda s: s.get(latency, 0) >= 3)
        label = (("namespace", ns),)
        assert samples[("procreg_namespace_entries", label)] == 3
        assert samples[("procreg_registry_namespace_owners", label)] == 2
        assert samples[("procreg_registry_owners", ())] == 2
        # Three registrations made in this process woke the server.
        assert samples[latency] == 3
        inf = ("procreg_registry_wakeup_latency_seconds_bucket",
               (("le", "+Inf"),))
        assert samples[inf] == 3
        assert samples[("procreg_registry_owner_exits_total", ())] == 0

        gone = []
        registry.subscribe(ns, "job", lambda r, ev, *_: gone.append(ev)
                           if ev.get_kind() ==
                           Procreg.EventKind.UNREGISTERED else None)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        run_until(lambda: gone)
        exits = ("procreg_registry_owner_exits_total", ())
        samples = scrape_until(metrics_url, lambda s: s[exits] >= 1)
        assert samples[exits] == 1
        assert samples[("procreg_registry_namespace_owners", label)] == 1
        assert samples[("procreg_namespace_entries", label)] == 2
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    base = metrics_url.rsplit("/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/other", timeout=5)
    assert info.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(
            metrics_url, data=b"x", method="POST"), timeout=5)
    assert info.value.code == 405


def test_metrics_refuses_a_bad_address(registry_dir):
    for listen in ["localhost:9464", "127.0.0.1", "nonsense"]:
        done = subprocess.run(
            [CLI, "--backend", lmdb_spec(registry_dir), "metrics",
             "--listen", listen], capture_output=True, text=True, timeout=10)
        assert done.returncode == 2, listen
        assert "--listen" in done.stderr


def test_metrics_groups(ns, registry_dir, metrics_url):
    """Groups and their sizes, everyone's: two processes hold members."""
    holders = [subprocess.Popen([CLI, "--backend", lmdb_spec(registry_dir),
                                 "join", ns, "workers", "--hold"],
                                stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        for h in holders:
            assert h.stdout.readline()  # it says it joined, then holds
        members = ("procreg_registry_group_members",
                   (("group", "workers"), ("namespace", ns)))
        samples = scrape_until(metrics_url, lambda s: s.get(members) == 2)
        assert samples[members] == 2
        assert samples[("procreg_registry_groups",
                        (("namespace", ns),))] == 1
        holders[0].kill()
        holders[0].wait()
        samples = scrape_until(metrics_url, lambda s: s.get(members) == 1)
        assert samples[members] == 1
    finally:
        for h in holders:
            if h.poll() is None:
                h.kill()
                h.wait()
