"""Benchmark: from ``git push`` to a running agent's ``on_change``, by how the daemon learns of it.

    python bench/latency.py [--pushes 100] [--agents 20] [--modes webhook,local,poll,longpoll]

Starts a throwaway redis-server (a free port, no persistence), a bare git "remote" and a
working clone with generated agent files, and for each mode runs ``python -m configsync sync``
as a subprocess, then pushes ``--pushes`` commits one at a time (each changes one agent) and
measures from ``git push`` returning until the agent process sees the new version:

* ``webhook``: ``--repo file://...`` (a URL: no local trigger) with ``--interval 3600`` and
  ``--listen``; right after the push the benchmark POSTs a signed GitHub push event to
  ``/webhook``, as GitHub does after a push;
* ``local``: ``--repo`` the bare repository's path with ``--interval 3600``: the local trigger
  (watchdog on its refs) starts the sync;
* ``poll``: ``--repo file://...`` with ``--interval 1``, the baseline: plain polling, as before
  this benchmark's triggers existed;
* ``longpoll``: as ``local``, with ``--listen``; the agent is an HTTP client long-polling
  ``GET /agents/{id}?wait=30`` with ``If-None-Match`` (no Redis client).

Every mode but ``longpoll`` measures a ``configsync.Client``'s ``on_change`` callback. Prints
p50, p99 and max per mode and the targets (p99 under 150 ms with a trigger; polling within
the interval + 100 ms); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import Repo, percentile, show_log_tail, stop

from configsync.client import Client
from configsync.embedded import RedisServer
from configsync.holdings import Snapshot

EVENT_TIMEOUT = 30.0  # the longest one push may take to arrive
READY_TIMEOUT = 60.0
POLL_INTERVAL = 1.0
TRIGGER_TARGET_MS = 150.0
SECRET_ENV = "CONFIGSYNC_BENCH_WEBHOOK_SECRET"  # noqa: S105 (a variable's name)
SECRET = "bench-secret"  # noqa: S105 (a throwaway daemon's, in this run only)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(port: int, method: str, path: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10
         ) -> tuple[int, dict[str, str]]:
    """One HTTP request to the daemon on 127.0.0.1: the status and the headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def webhook(port: int, commit: str) -> None:
    """POST a GitHub push event for ``main`` at ``commit``, signed as GitHub signs it."""
    body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, _ = request(port, "POST", "/webhook", body=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-Hub-Signature-256": signature})
    if status != 202:
        raise RuntimeError(f"webhook answered {status}")


class Daemon:
    """``python -m configsync sync`` as a subprocess, logging to a file."""

    def __init__(self, base: Path, redis_url: str, namespace: str, args: list[str]) -> None:
        self.log_path = base / f"{namespace}.log"
        self.log = self.log_path.open("wb")
        env = {**os.environ, SECRET_ENV: SECRET}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "configsync", "sync", "--redis", redis_url,
             "--namespace", namespace, "--workdir", str(base / f"wd-{namespace}"), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def wait_ready(check: Callable[[], bool], daemon: Daemon) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            show_log_tail(daemon.log_path)
            raise RuntimeError("the daemon did not come up")
        time.sleep(0.05)


def http_ready(port: int) -> bool:
    try:
        return request(port, "GET", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


def client_mode(repo: Repo, redis_url: str, namespace: str, pushes: int, daemon: Daemon,
                after_push: Callable[[str], None] | None) -> list[float]:
    """Push ``pushes`` commits; the seconds from each push until ``on_change`` has it."""
    seen: dict[tuple[str, str], float] = {}
    arrived = threading.Condition()

    def on_change(agent_id: str, new: Snapshot | None) -> None:
        if new is not None:
            with arrived:
                seen[(agent_id, new.commit)] = time.perf_counter()
                arrived.notify_all()

    with Client(redis=redis_url, namespace=namespace) as client:
        wait_ready(lambda: not client.status().stale and bool(client.status().versions), daemon)
        client.on_change(on_change)
        samples = []
        for i in range(pushes):
            agent_id, commit = repo.commit_change(i)
            repo.push()
            pushed = time.perf_counter()
            if after_push is not None:
                after_push(commit)
            key = (agent_id, commit)
            with arrived:
                if not arrived.wait_for(lambda key=key: key in seen, EVENT_TIMEOUT):
                    show_log_tail(daemon.log_path)
                    raise RuntimeError(f"push {i} did not arrive within {EVENT_TIMEOUT} s")
                samples.append(seen[key] - pushed)
    return samples


def longpoll_mode(repo: Repo, port: int, pushes: int, daemon: Daemon) -> list[float]:
    """Push ``pushes`` commits; the seconds from each push until a long-poll returns it."""
    wait_ready(lambda: http_ready(port), daemon)
    samples = []
    for i in range(pushes):
        agent_id = repo.agent_id(i)
        path = f"/agents/{agent_id}"
        deadline = time.monotonic() + READY_TIMEOUT
        while True:  # the agent as served now, and its ETag
            status, headers = request(port, "GET", path)
            if status == 200:
                etag = headers["ETag"]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {path} answered {status}")
            time.sleep(0.05)
        result: dict[str, float] = {}

        def poll(path: str = path, etag: str = etag, result: dict[str, float] = result) -> None:
            status, _ = request(port, "GET", f"{path}?wait=30", headers={"If-None-Match": etag},
                             timeout=40)
            if status == 200:
                result["at"] = time.perf_counter()

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.05)  # (the request is parked at the server before the push)
        _, _commit = repo.commit_change(i)
        repo.push()
        pushed = time.perf_counter()
        poller.join(EVENT_TIMEOUT + 10)
        if "at" not in result:
            show_log_tail(daemon.log_path)
            raise RuntimeError(f"long-poll {i} did not return")
        samples.append(result["at"] - pushed)
    return samples


def run_mode(mode: str, base: Path, redis_url: str, pushes: int, agents: int,
             seed: int) -> list[float]:
    repo = Repo(base / mode, agents, seed)
    remote_url = f"file://{repo.remote}"
    port = free_port()
    listen = ["--listen", f"127.0.0.1:{port}"]
    if mode == "webhook":
        args = ["--repo", remote_url, "--interval", "3600", *listen,
                "--webhook-secret-env", SECRET_ENV]
    elif mode == "local":
        args = ["--repo", str(repo.remote), "--interval", "3600"]
    elif mode == "poll":
        args = ["--repo", remote_url, "--interval", str(POLL_INTERVAL)]
    else:  # longpoll
        args = ["--repo", str(repo.remote), "--interval", "3600", *listen]
    daemon = Daemon(base, redis_url, f"bench-{mode}", args)
    try:
        if mode == "longpoll":
            return longpoll_mode(repo, port, pushes, daemon)
        after = (lambda commit: webhook(port, commit)) if mode == "webhook" else None
        return client_mode(repo, redis_url, f"bench-{mode}", pushes, daemon, after)
    finally:
        daemon.close()


def report(results: dict[str, list[float]]) -> bool:
    ok = True
    print(f"\npush -> on_change latency ({len(next(iter(results.values())))} pushes each)\n")
    print(f"| {'mode':<10} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} | target |")
    print(f"| {'-' * 10} | {'-' * 8}:| {'-' * 8}:| {'-' * 8}:| --- |")
    for mode, samples in results.items():
        ms = [s * 1000 for s in samples]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        limit = (POLL_INTERVAL * 1000 + 100) if mode == "poll" else TRIGGER_TARGET_MS
        met = p99 <= limit
        ok &= met
        print(f"| {mode:<10} | {p50:8.1f} | {p99:8.1f} | {max(ms):8.1f} | p99 <= {limit:.0f} ms "
              f"{'ok' if met else 'MISSED'} |")
    print("\nbaseline: poll (--interval 1) in the same run; a trigger's floor here is a local "
          "fetch plus a Redis round trip")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="webhook,local,poll,longpoll")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - {"webhook", "local", "poll", "longpoll"}
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    base = Path(tempfile.mkdtemp(prefix="configsync-latency-"))
    server = RedisServer(base / "redis", persist=False).start()
    try:
        results = {mode: run_mode(mode, base, server.url, args.pushes, args.agents, args.seed)
                   for mode in modes}
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
