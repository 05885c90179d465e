"""Benchmark: ``Client.get()`` against one Redis GET + ``json.loads`` per conversation turn.

    python bench/client.py [--agents 100] [--changes 100] [--seed 1]

Starts a throwaway redis-server (a free port, no persistence), a bare git "remote" and a working
clone with agent files generated as bench/validate.py does, and measures in this one run:

* ``Client.get(agent_id)`` (ns/op, median of 5 repeats x 200,000 calls) against the "seed
  article" baseline, ``json.loads(r.get(f"agent:{agent_id}"))`` per turn (median of 5 x 2,000),
  both against the same redis-server: the configs come from one in-process ``Daemon.sync()``, and
  the baseline's keys hold the same resolved configs as JSON strings;
* daemon applies -> callback: ``Daemon.catch_up()`` called here (after the fetch), from its start
  until ``on_change`` sees the new version (median and max of 20): the client's own pub/sub
  reaction, without the poll interval;
* push -> callback (p50, p99): ``python -m configsync sync --interval 0.2`` as a subprocess; one
  agent file changed, committed and pushed per iteration, from ``git push`` returning until the
  callback sees the expected version.

* a large commit (``--large 1000,10000``): one commit that changes every agent, from ``git push``
  until a client with ``cache_path`` holds every new version and its cache file has them, with
  ``configsync sync --interval 0.2`` as the daemon (bench/large_commit.py, in a subprocess;
  the daemon's own share is until its state names the commit), next to the same script run against
  LARGE_BASELINE_REV (per-agent events: one HGET and one whole-cache rewrite per agent), in a
  git worktree, for the sizes in ``--large-baseline`` (default 1000: the baseline is quadratic).

Prints a table and the targets; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path

import redis

from configsync.client import Client
from configsync.embedded import RedisServer
from configsync.git import Mirror
from configsync.holdings import Snapshot
from configsync.store import Store
from configsync.sync import Daemon

EVENT_TIMEOUT = 30.0  # the longest we ever wait for one callback
READY_TIMEOUT = 60.0  # the longest we wait for the daemon subprocess's first sync
GET_REPEATS, GET_NUMBER = 5, 200_000
BASE_REPEATS, BASE_NUMBER = 5, 2_000
CATCH_UP_REPS = 20
POLL_INTERVAL = 0.2
GET_TARGET_NS = 1000.0
RATIO_TARGET = 100.0
LARGE_TARGETS = {1000: 1.0, 10_000: 5.0}  # seconds, issue 9
LARGE_BASELINE_REV = "dc73132"  # the last revision whose daemon sent one event per agent
LARGE_BASELINE_TIMEOUT = 900

from benchlib import Repo, git, percentile, show_log_tail, stop  # noqa: E402  (bench/ is on sys.path)

# -- callbacks ---------------------------------------------------------------------------------

@dataclass
class Expected:
    agent_id: str
    version: int
    commit: str
    fired: threading.Event = field(default_factory=threading.Event)
    at: float = 0.0
    error: str = ""


class Recorder:
    """An ``on_change`` callback: records perf_counter() when the expected version arrives."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, Expected] = {}

    def expect(self, agent_id: str, version: int, commit: str) -> Expected:
        expected = Expected(agent_id, version, commit)
        with self.lock:
            self.pending[agent_id] = expected
        return expected

    def __call__(self, agent_id: str, snapshot: Snapshot | None) -> None:
        now = time.perf_counter()
        with self.lock:
            expected = self.pending.get(agent_id)
            if (expected is None or snapshot is None or snapshot.version < expected.version
                    or expected.fired.is_set()):
                return
            if snapshot.commit != expected.commit:
                expected.error = (f"{agent_id} v{snapshot.version} came with commit "
                                  f"{snapshot.commit[:12]}, expected {expected.commit[:12]}")
            expected.at = now
            del self.pending[agent_id]
        expected.fired.set()

    def wait(self, expected: Expected, what: str) -> float:
        """perf_counter() at the callback; raises TimeoutError."""
        if not expected.fired.wait(EVENT_TIMEOUT):
            raise TimeoutError(f"{what}: no callback for {expected.agent_id} "
                               f"v{expected.version} within {EVENT_TIMEOUT:.0f} s")
        if expected.error:
            raise RuntimeError(f"{what}: {expected.error}")
        return expected.at


# -- measurements ------------------------------------------------------------------------------

def measure_get(client: Client, url: str, agent_id: str) -> tuple[list[float], list[float]]:
    """ns/op of each repeat: Client.get() and the GET + json.loads baseline."""
    base = redis.Redis.from_url(url)
    try:
        held = client.get(agent_id)
        raw = base.get(f"agent:{agent_id}")
        assert raw is not None and json.loads(raw) == held.record.config, "baseline differs"
        ours = timeit.Timer("get(agent_id)", globals={
            "get": client.get, "agent_id": agent_id}).repeat(GET_REPEATS, GET_NUMBER)
        theirs = timeit.Timer("loads(r_get(f'agent:{agent_id}'))", globals={
            "loads": json.loads, "r_get": base.get, "agent_id": agent_id,
        }).repeat(BASE_REPEATS, BASE_NUMBER)
    finally:
        base.close()
    return ([t / GET_NUMBER * 1e9 for t in ours], [t / BASE_NUMBER * 1e9 for t in theirs])


def measure_catch_up(repo: Repo, daemon: Daemon, client: Client,
                     reps: int) -> tuple[list[float], list[float]]:
    """Seconds from the start of Daemon.catch_up (after the fetch) to the client's callback,
    and to catch_up returning."""
    recorder = Recorder()
    remove = client.on_change(recorder)
    times, returned = [], []
    try:
        for i in range(reps):
            agent_id, commit = repo.commit_change(i * 37 + 11)
            repo.push()
            daemon.mirror.fetch("main")
            head = daemon.mirror.head("main")
            assert head == commit, (head, commit)
            expected = recorder.expect(agent_id, client.get(agent_id).version + 1, commit)
            start = time.perf_counter()
            result = daemon.catch_up(head)
            returned.append(time.perf_counter() - start)
            if not result.applied:
                raise RuntimeError(f"commit {commit[:12]} was rejected: "
                                   f"{daemon.store.state().get('last_error')}")
            times.append(recorder.wait(expected, "catch_up") - start)
    finally:
        remove()
    return times, returned


def wait_applied(url: str, namespace: str, commit: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the daemon subprocess serves ``commit``; raises TimeoutError."""
    store = Store(redis.Redis.from_url(url), namespace)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while store.state().get("commit") != commit:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not apply {commit[:12]} within "
                                   f"{READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
    finally:
        store.redis.close()


def measure_push(base: Path, url: str, repo: Repo, changes: int, seed: int) -> list[float]:
    """Seconds from ``git push`` returning to the callback, with the daemon as a subprocess."""
    namespace = "benchpush"
    log_path = base / "daemon.log"
    jitter = random.Random(seed)
    latencies: list[float] = []
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "configsync", "sync", "--repo", str(repo.remote),
             "--redis", url, "--namespace", namespace, "--interval", str(POLL_INTERVAL),
             "--workdir", str(base / "daemon")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_applied(url, namespace, git(repo.clone, "rev-parse", "HEAD"), proc)
                recorder = Recorder()
                with Client(redis=url, namespace=namespace) as client:
                    held = len(client.status().versions)
                    if held != len(repo.files):
                        raise RuntimeError(f"the client holds {held} agents, "
                                           f"expected {len(repo.files)}")
                    client.on_change(recorder)
                    for i in range(changes):
                        agent_id, commit = repo.commit_change(i)
                        expected = recorder.expect(agent_id, client.get(agent_id).version + 1,
                                                   commit)
                        time.sleep(jitter.uniform(0, POLL_INTERVAL))  # a random poll phase
                        repo.push()
                        pushed = time.perf_counter()
                        latencies.append(recorder.wait(expected, f"push {i + 1}") - pushed)
            except (TimeoutError, RuntimeError, subprocess.CalledProcessError):
                show_log_tail(log_path)
                raise
        finally:
            stop(proc)
    return latencies


def run_large(agents: int, pythonpath: str | None, base: Path) -> dict[str, float] | None:
    """bench/large_commit.py in a subprocess, outside the project (``python`` puts the
    script's folder first on sys.path, never the project's, so ``pythonpath`` decides which
    configsync runs); None when it failed or timed out."""
    env = {**os.environ, "LARGE_COMMIT_TIMEOUT": str(LARGE_BASELINE_TIMEOUT)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("large_commit.py")),
                               str(agents)], cwd=base, env=env, capture_output=True, text=True,
                              timeout=LARGE_BASELINE_TIMEOUT + 300, check=False)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        print(f"[large] {agents} agents failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_large(base: Path, sizes: list[int], baseline_sizes: list[int]
                  ) -> list[tuple[int, dict[str, float] | None, dict[str, float] | None]]:
    rows: list[tuple[int, dict[str, float] | None, dict[str, float] | None]] = []
    project = Path(__file__).resolve().parents[1]
    worktree = base / "baseline"
    added = subprocess.run(["git", "-C", str(project), "worktree", "add", "-q", "--detach",
                            str(worktree), LARGE_BASELINE_REV], capture_output=True,
                           check=False).returncode == 0
    try:
        for n in sizes:
            print(f"[large] {n} agents, now ...", file=sys.stderr, flush=True)
            ours = run_large(n, None, base)
            before = None
            if added and n in baseline_sizes:
                print(f"[large] {n} agents, at {LARGE_BASELINE_REV} ...", file=sys.stderr,
                      flush=True)
                before = run_large(n, str(worktree), base)
            rows.append((n, ours, before))
    finally:
        if added:
            subprocess.run(["git", "-C", str(project), "worktree", "remove", "--force",
                            str(worktree)], capture_output=True, check=False)
    return rows


def report_large(rows: list[tuple[int, dict[str, float] | None, dict[str, float] | None]]
                 ) -> list[tuple[str, bool, str]]:
    checks = []
    print(f"\n{'large commit, every agent changed':<52}{'now':>16}"
          f"{LARGE_BASELINE_REV:>16}{'ratio':>8}")
    for n, ours, before in rows:
        now = f"{ours['seconds']:.2f}" if ours else "failed"
        old = f"{before['seconds']:.2f}" if before else "not run"
        ratio = f"{before['seconds'] / ours['seconds']:.0f}x" if ours and before else ""
        print(f"{f'  {n:,} agents, push -> client with cache_path (s)':<52}{now:>16}{old:>16}"
              f"{ratio:>8}")
        if ours:
            old_daemon = f"{before['daemon']:.2f}" if before else "-"
            print(f"{'    of which the daemon (push -> state names it) (s)':<52}"
                  f"{ours['daemon']:>16.2f}{old_daemon:>16}")
        target = LARGE_TARGETS.get(n)
        if target is not None:
            checks.append((f"a {n:,}-agent commit reaches a client with a cache in < {target:g} s",
                           ours is not None and ours["seconds"] < target,
                           f"{ours['seconds']:.2f} s" if ours else "failed"))
    return checks


# -- the table ---------------------------------------------------------------------------------

def report(ours: list[float], theirs: list[float], catch_up: list[float], applied: list[float],
           pushes: list[float], large_checks: list[tuple[str, bool, str]]) -> bool:
    ms = 1000.0
    get_ns, base_ns = statistics.median(ours), statistics.median(theirs)
    ratio = base_ns / get_ns
    print(f"\n{'measure':<52}{'configsync':>16}{'baseline':>16}{'ratio':>8}")
    print(f"{f'get, ns/op (median of {len(ours)} / {len(theirs)} repeats)':<52}"
          f"{get_ns:>16.0f}{base_ns:>16.0f}{ratio:>7.0f}x")
    print(f"{'  min / max of repeats':<52}{f'{min(ours):.0f} / {max(ours):.0f}':>16}"
          f"{f'{min(theirs):.0f} / {max(theirs):.0f}':>16}")
    if catch_up:
        label = f"daemon applies -> callback, median / max (ms, n={len(catch_up)})"
        got = f"{statistics.median(catch_up) * ms:.1f} / {max(catch_up) * ms:.1f}"
        print(f"{label:<52}{got:>16}{'-':>16}")
        print(f"{'  of which Daemon.catch_up returned, median':<52}"
              f"{statistics.median(applied) * ms:>16.1f}{'-':>16}")
    if pushes:
        label = f"push -> callback, p50 / p99 (ms, n={len(pushes)})"
        print(f"{label:<52}"
              f"{f'{percentile(pushes, 50) * ms:.0f} / {percentile(pushes, 99) * ms:.0f}':>16}"
              f"{'-':>16}")
    checks = [
        ("Client.get() under 1 µs (median)", get_ns < GET_TARGET_NS, f"{get_ns:.0f} ns"),
        (f"at least {RATIO_TARGET:.0f}x faster than a GET + json.loads per turn",
         ratio >= RATIO_TARGET, f"{ratio:.0f}x"),
        *large_checks,
    ]
    print("\ntargets:")
    for name, ok, got in checks:
        mark = "[ok]" if ok else "[MISS]"
        print(f"  {mark:<7}{name:<66}{got}")
    print("\nnotes:")
    print(f"  get: timeit, {GET_REPEATS} x {GET_NUMBER:,} calls of client.get(id) (in memory); "
          f"baseline {BASE_REPEATS} x {BASE_NUMBER:,}\n  calls of "
          "json.loads(r.get(f'agent:{id}')) on its own connection to the same redis-server.")
    if catch_up:
        print("  daemon applies -> callback: from the start of Daemon.catch_up (after the fetch; "
              "validate + one\n  transaction + publish) until on_change sees the new version, "
              "in this process;\n  `of which ... returned` is catch_up alone (the callback may "
              "fire before it returns).")
    if pushes:
        print(f"  push -> callback runs `configsync sync --interval {POLL_INTERVAL}` as a "
              f"subprocess; latency includes up to\n  one poll interval ({POLL_INTERVAL * ms:.0f}"
              " ms) by design; each push waits a random 0-200 ms first, so pushes land\n  at "
              "random phases of the poll loop.")
    return all(ok for _, ok, _ in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--large", default="1000,10000",
                        help="agent counts for the large-commit measure ('' to skip)")
    parser.add_argument("--large-baseline", default="1000",
                        help=f"of those, the ones to run at {LARGE_BASELINE_REV} too")
    args = parser.parse_args()
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    base = Path(tempfile.mkdtemp(prefix="configsync-bench-client-"))
    os.environ["GIT_CONFIG_GLOBAL"] = str(base / "gitconfig")  # no user config, no hooks
    (base / "gitconfig").write_text("")
    server: RedisServer | None = None
    daemon: Daemon | None = None
    try:
        server = RedisServer(base / "redis", persist=False).start()
        url, namespace = server.url, "benchclient"
        print(f"[setup] {args.agents} agents: generating, committing, pushing, syncing ...",
              file=sys.stderr, flush=True)
        repo = Repo(base / "repo", args.agents, args.seed)
        daemon = Daemon(mirror=Mirror(base / "mirror", str(repo.remote)),
                        store=Store(redis.Redis.from_url(url), namespace))
        result = daemon.sync()
        if not result.applied:
            raise RuntimeError(f"initial sync was rejected: "
                               f"{daemon.store.state().get('last_error')}")
        records = daemon.store.current()
        if len(records) != args.agents:
            raise RuntimeError(f"initial sync stored {len(records)} agents, not {args.agents}")
        daemon.store.redis.mset({f"agent:{agent_id}": json.dumps(record.config)
                                 for agent_id, record in records.items()})
        agent_id = repo.agent_id(args.agents // 2)
        with Client(redis=url, namespace=namespace) as client:
            print("[get] timing Client.get() and GET + json.loads ...", file=sys.stderr,
                  flush=True)
            ours, theirs = measure_get(client, url, agent_id)
            print(f"[catch_up] {CATCH_UP_REPS} in-process applies ...", file=sys.stderr,
                  flush=True)
            catch_up, applied = measure_catch_up(repo, daemon, client, CATCH_UP_REPS)
        pushes: list[float] = []
        if args.changes > 0:
            print(f"[push] {args.changes} pushes against `configsync sync` ...",
                  file=sys.stderr, flush=True)
            pushes = measure_push(base, url, repo, args.changes, args.seed)
        sizes = [int(n) for n in args.large.split(",") if n.strip()]
        baseline_sizes = [int(n) for n in args.large_baseline.split(",") if n.strip()]
        large = measure_large(base, sizes, baseline_sizes) if sizes else []
        print(f"\nconfigsync Client vs a Redis GET + json.loads per turn, {args.agents} agents, "
              f"seed {args.seed}, {os.cpu_count()} cores, one run on this machine, "
              "redis-server on 127.0.0.1")
        large_checks = report_large(large) if large else []
        ok = report(ours, theirs, catch_up, applied, pushes, large_checks)
        return 0 if ok else 1
    finally:
        if daemon is not None:
            daemon.mirror.close()
            daemon.store.redis.close()
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
