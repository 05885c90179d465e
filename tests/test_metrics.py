"""The daemon's metrics: in-memory values of a collector of its own, whatever
``PROMETHEUS_MULTIPROC_DIR`` says (issue 17, item 11), and what ``seconds behind`` claims."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from configsync.embedded import RedisServer, free_port
from configsync.metrics import Metrics

from .conftest import Remote, spawn_daemon, wait_until
from .test_server import request


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if not s.labels}


def test_seconds_behind_is_unknown_while_syncs_fail() -> None:
    metrics = Metrics()
    metrics.synced(None)
    assert metrics.seconds_behind() == 0.0
    metrics.failed(OSError("the mirror is gone"))
    assert math.isnan(metrics.seconds_behind())  # never a 0 the daemon cannot know
    assert math.isnan(_samples(metrics.text().decode())["configsync_seconds_behind_remote"])
    metrics.fetched(1234.5)
    metrics.synced(100.0)
    assert metrics.seconds_behind(now=160.0) == 60.0
    assert _samples(metrics.text().decode())[
        "configsync_last_successful_fetch_timestamp_seconds"] == 1234.5


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["missing", "existing"])
def test_sync_listen_ignores_prometheus_multiproc_dir(
        folder: str, remote: Remote, redis_server: RedisServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Set for a whole container (an app's gunicorn workers use it), the variable crashed
    ``sync --listen`` (exit 3, FileNotFoundError ... histogram_<pid>.db) or put configsync's
    files in another program's folder. The daemon's metrics are its own: nothing is written
    there, and /metrics counts every sync."""
    shared = tmp_path / "app-metrics"
    if folder == "existing":
        shared.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    port = free_port()
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=0.05,
                        extra=["--listen", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"

    def syncs() -> float:
        try:
            status, _, body = request(url + "/metrics", timeout=2)
        except OSError:
            return 0.0
        if status != 200:  # (503 while the daemon starts)
            return 0.0
        return _samples(body.decode()).get("configsync_sync_duration_seconds_count", 0.0)

    try:
        wait_until(lambda: syncs() >= 3, timeout=30)
        assert proc.poll() is None
        assert request(url + "/readyz", timeout=2)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log
    if folder == "missing":
        assert not shared.exists()
    else:
        assert list(shared.iterdir()) == []


CLIENT_APP = """
import sys
from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
import configsync
from configsync.client_metrics import ClientCollector

requests = Counter("app_requests", "the app's own metric, in multiprocess mode")
requests.inc()
client = configsync.Client(redis=sys.argv[1], namespace="test")
client.start()
registry = CollectorRegistry()  # what the app serves: every worker's files, and our clients
multiprocess.MultiProcessCollector(registry)
registry.register(ClientCollector(client))
sys.stdout.write(generate_latest(registry).decode())
client.stop()
"""


def test_the_client_collector_in_an_app_in_multiprocess_mode(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """An app in prometheus-client's multiprocess mode serves a registry that reads every
    worker's files; ClientCollector computes its gauges at scrape time from the clients of
    the process that serves it (documented): it writes no file and breaks nothing."""
    shared = tmp_path / "app-metrics"
    shared.mkdir()
    done = subprocess.run([sys.executable, "-c", CLIENT_APP, redis_server.url],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)})
    assert done.returncode == 0, done.stderr
    assert "app_requests_total 1.0" in done.stdout
    assert 'configsync_client_stale{namespace="test"}' in done.stdout
    assert sorted(p.name.split("_")[0] for p in shared.iterdir()) == ["counter"]  # the app's
