"""Benchmark: the sync daemon against a naive "read everything, SET + PUBLISH each" script.

    python bench/sync.py [--agents 10000] [--small 1000] [--pushes 100] [--seed 1]

Starts a throwaway redis-server (a free port, no persistence), a bare git "remote" and a working
clone, generates agent files as bench/validate.py does, and measures in this one run:

* initial sync of the repository: ``Daemon.sync()`` on an empty namespace (fetch into an empty
  mirror, validate everything, one transaction) against the naive full pass;
* one changed agent file: ``Daemon.catch_up()`` after the fetch, until a pub/sub subscriber has
  the ``updated`` event (median and max of 20), against the naive full pass that re-reads and
  re-validates every file and SETs and PUBLISHes every agent one by one (median of 3), at two
  repository sizes;
* push -> ``updated`` event latency (p50, p99) with ``python -m configsync sync`` running as a
  subprocess (``--interval 0.2``) on a small repository;
* the rebuild of a long history (``--history``, 5,000 commits by default): the walk as it was
  (a ``git diff-tree`` and a ``git cat-file`` process per commit) against the walk as it is (one
  ``git log --raw`` and one ``git cat-file`` for all of it), then the whole ``Daemon.rebuild``;
* the longest Redis server-side block while a rebuild of ``--rebuild-agents`` agents with
  ``--rebuild-versions`` versions each writes (the longest PING another client waited for):
  everything in one MULTI/EXEC, as before, against history in bounded pipelines first and a
  transaction without it;
* ``configsync validate`` on an ``extends`` chain of ``--chain`` files, and the revision before
  resolution was made linear (``BASELINE_REV``, in a git worktree) on ``--chain-baseline`` files.

The naive baseline is the usual blog-post ``AgentConfigStore.put(agent_id, config)``:
``load_yaml`` + ``AgentConfig.model_validate`` per file, then ``r.set(key, json)`` and
``r.publish(channel, json)`` per agent, with no incremental tricks. Prints a table and the
targets; exits 1 when a target is missed.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from configsync.embedded import RedisServer
from configsync.git import Mirror
from configsync.loader import load_yaml
from configsync.model import AgentConfig, RepoSettings
from configsync.store import Keys, Store
from configsync.sync import Daemon

EVENT_TIMEOUT = 30.0  # the longest we ever wait for one event
INCREMENTAL_REPS = 20
NAIVE_REPS = 3
PUSH_REPO_AGENTS = 100

from benchlib import Repo, history_repo, percentile, show_log_tail, stop  # noqa: E402

BASELINE_REV = "09f5597"  # the last revision whose extends resolution cost N^2

# -- pub/sub -----------------------------------------------------------------------------------

class Subscriber:
    """A pub/sub subscription on its own connection."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        deadline = time.monotonic() + EVENT_TIMEOUT
        while time.monotonic() < deadline:  # wait for the subscribe confirmation
            if self.pubsub.subscribed:
                self.pubsub.get_message(timeout=0.05)
                break
            self.pubsub.get_message(timeout=0.05)

    def drain(self) -> None:
        while self.pubsub.get_message(timeout=0.0) is not None:
            pass

    def wait(self, match: Callable[[dict[str, Any]], bool],
             timeout: float = EVENT_TIMEOUT) -> float:
        """perf_counter() when an event ``match`` accepts arrives; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event within {timeout:.0f} s")
            message = self.pubsub.get_message(timeout=min(left, 1.0))
            if message is None or message.get("type") != "message":
                continue
            if match(json.loads(message["data"])):
                return time.perf_counter()

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def updated(agent_id: str, commit: str) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        return (event.get("type") == "applied" and event.get("commit") == commit
                and any(c["agent_id"] == agent_id for c in event.get("changes") or ()))
    return match


# -- the naive baseline ------------------------------------------------------------------------

def naive_pass(root: Path, client: redis.Redis, prefix: str) -> int:
    """Re-read and validate every file; SET + PUBLISH every agent one by one."""
    settings = RepoSettings.model_validate(load_yaml((root / "configsync.yaml").read_bytes()).data)
    context = {"settings": settings}
    channel = prefix + "changes"
    agents = root / "agents"
    count = 0
    for path in sorted(agents.rglob("*.yaml")):
        agent_id = path.relative_to(agents).with_suffix("").as_posix()
        config = AgentConfig.model_validate(load_yaml(path.read_bytes()).data, context=context)
        text = json.dumps({"agent_id": agent_id, "config": config.model_dump(mode="json")})
        client.set(prefix + "agent:" + agent_id, text)
        client.publish(channel, text)
        count += 1
    return count


# -- measurements ------------------------------------------------------------------------------

def make_daemon(url: str, repo: Repo, workdir: Path, namespace: str) -> Daemon:
    return Daemon(mirror=Mirror(workdir, str(repo.remote)),
                  store=Store(redis.Redis.from_url(url), namespace),
                  branch="main", keep=100, jobs=os.cpu_count() or 1, tune_gc=True)


def incremental_ours(url: str, repo: Repo, daemon: Daemon, reps: int) -> list[float]:
    """Seconds from the start of catch_up to the ``updated`` event at a subscriber."""
    sub = Subscriber(url, daemon.store.keys.changes)
    times = []
    try:
        for i in range(reps):
            agent_id, commit = repo.change(i * 37 + 11)
            daemon.mirror.fetch("main")
            head = daemon.mirror.head("main")
            assert head == commit, (head, commit)
            sub.drain()
            got: list[float] = []
            failed: list[BaseException] = []

            def listen(agent_id: str = agent_id, commit: str = commit,
                       got: list[float] = got, failed: list[BaseException] = failed) -> None:
                try:
                    got.append(sub.wait(updated(agent_id, commit)))
                except BaseException as exc:  # reported below
                    failed.append(exc)

            thread = threading.Thread(target=listen, daemon=True)
            thread.start()
            start = time.perf_counter()
            result = daemon.catch_up(head)
            thread.join(EVENT_TIMEOUT + 5)
            if not got:
                raise RuntimeError(f"no updated event for {agent_id} at {commit[:12]} "
                                   f"(applied={result.applied}): {failed}")
            times.append(got[0] - start)
    finally:
        sub.close()
    return times


def incremental_naive(url: str, repo: Repo, prefix: str, reps: int) -> list[float]:
    client = redis.Redis.from_url(url)
    times = []
    try:
        for i in range(reps):
            repo.change(i * 53 + 7)
            start = time.perf_counter()
            naive_pass(repo.clone, client, prefix)
            times.append(time.perf_counter() - start)
    finally:
        client.close()
    return times


def measure_size(base: Path, url: str, agents: int, seed: int) -> dict[str, Any]:
    print(f"[{agents} agents] generating, committing, pushing ...", file=sys.stderr, flush=True)
    repo = Repo(base / f"repo{agents}", agents, seed)
    # A cold fetch of the whole repository into an empty mirror, alone (part of initial sync).
    cold = Mirror(base / f"coldmirror{agents}", str(repo.remote))
    start = time.perf_counter()
    cold.fetch("main")
    fetch_s = time.perf_counter() - start
    cold.close()
    shutil.rmtree(base / f"coldmirror{agents}", ignore_errors=True)

    print(f"[{agents} agents] initial sync ...", file=sys.stderr, flush=True)
    daemon = make_daemon(url, repo, base / f"mirror{agents}", f"bench{agents}")
    try:
        start = time.perf_counter()
        result = daemon.sync()
        initial_s = time.perf_counter() - start
        if not result.applied:
            raise RuntimeError(f"initial sync of {agents} agents was rejected: "
                               f"{daemon.store.state().get('last_error')}")
        stored = daemon.store.redis.hlen(daemon.store.keys.current)
        if stored != agents:
            raise RuntimeError(f"initial sync stored {stored} agents, expected {agents}")
        client = redis.Redis.from_url(url)
        try:
            start = time.perf_counter()
            naive_count = naive_pass(repo.clone, client, f"naive{agents}:")
            naive_initial_s = time.perf_counter() - start
        finally:
            client.close()
        assert naive_count == agents, naive_count

        print(f"[{agents} agents] incremental, ours x{INCREMENTAL_REPS} ...", file=sys.stderr,
              flush=True)
        ours = incremental_ours(url, repo, daemon, INCREMENTAL_REPS)
    finally:
        daemon.mirror.close()
        daemon.store.redis.close()
    print(f"[{agents} agents] incremental, naive x{NAIVE_REPS} ...", file=sys.stderr, flush=True)
    naive = incremental_naive(url, repo, f"naive{agents}:", NAIVE_REPS)
    return {"agents": agents, "fetch": fetch_s, "initial": initial_s,
            "naive_initial": naive_initial_s, "ours": ours, "naive": naive}


def push_latency(base: Path, url: str, pushes: int, seed: int) -> list[float]:
    """Seconds from ``git push`` returning to the ``updated`` event, with the real daemon."""
    print(f"[push] {pushes} pushes against `configsync sync` ...", file=sys.stderr, flush=True)
    repo = Repo(base / "repo-push", PUSH_REPO_AGENTS, seed)
    namespace = "benchpush"
    sub = Subscriber(url, Keys(namespace).changes)
    log_path = base / "daemon.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", str(repo.remote), "--redis", url,
         "--namespace", namespace, "--interval", "0.2", "--workdir", str(base / "daemon")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    latencies = []
    jitter = random.Random(seed)
    try:
        try:
            sub.wait(lambda e: e.get("type") == "rebuilt")
            for i in range(pushes):
                time.sleep(jitter.uniform(0, 0.2))  # push at a random phase of the poll loop
                sub.drain()
                agent_id, commit = repo.change(i)
                pushed = time.perf_counter()
                latencies.append(sub.wait(updated(agent_id, commit)) - pushed)
        except (TimeoutError, subprocess.CalledProcessError):
            show_log_tail(log_path)
            raise
    finally:
        stop(proc)
        log.close()
        sub.close()
    return latencies


# -- long histories, big rebuilds, extends chains -----------------------------------------------

def history_walks(base: Path, url: str, commits: int, agents: int) -> dict[str, float]:
    """Seconds to compute every step of a ``commits``-long history: per commit (as before) and
    batched (as now), then a whole Daemon.rebuild into Redis."""
    from configsync.sync import Applied, Engine

    print(f"[history] {commits} commits over {agents} agents (git fast-import) ...",
          file=sys.stderr, flush=True)
    remote = base / "history.git"
    head = history_repo(remote, agents, commits)
    mirror = Mirror(base / "history-mirror", str(remote))
    mirror.fetch("main")
    engine = Engine(mirror, jobs=1)
    try:
        print("[history] per-commit walk ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        applied = Applied()
        for info in mirror.first_parent_log(None, head):
            step = engine.step(applied, info)
            applied = step.applied or applied
        per_commit = time.perf_counter() - start
        print("[history] batched walk ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        _, steps = engine.walk(Applied(), None, head)
        batched_applied = Applied()
        for step in steps:
            batched_applied = step.applied or batched_applied
        batched = time.perf_counter() - start
        if batched_applied.versions != applied.versions:
            raise RuntimeError("the batched walk numbered versions differently")
        daemon = Daemon(mirror=mirror, store=Store(redis.Redis.from_url(url), "benchhistory"),
                        tune_gc=True)
        start = time.perf_counter()
        daemon.sync()
        rebuild = time.perf_counter() - start
        daemon.store.redis.close()
    finally:
        mirror.close()
    return {"commits": commits, "per_commit": per_commit, "batched": batched,
            "rebuild": rebuild}


def _longest_wait_ms(url: str, run: Callable[[], None]) -> float:
    """The longest another client waited for an answer while ``run`` wrote: a PING every
    millisecond on its own connection (Redis runs one command, a whole MULTI/EXEC included,
    at a time; SLOWLOG times the commands inside a transaction one by one, not the block)."""
    prober = redis.Redis.from_url(url)
    prober.ping()
    longest = 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal longest
        while not done.is_set():
            start = time.perf_counter()
            prober.ping()
            longest = max(longest, time.perf_counter() - start)
            time.sleep(0.001)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()
        prober.close()
    return longest * 1000.0


def rebuild_blocks(url: str, agents: int, versions: int) -> dict[str, float]:
    """Longest server-side block while a rebuild of ``agents`` x ``versions`` writes."""
    from configsync.snapshot import Record, checksum
    from configsync.store import Event, Write

    print(f"[rebuild] {agents} agents x {versions} versions, one transaction vs pipelines ...",
          file=sys.stderr, flush=True)
    prompt = "You are a careful assistant. " * 30
    history = {}
    for a in range(agents):
        agent_id = f"team{a % 50}/agent{a}"
        records = []
        for v in range(1, versions + 1):
            config = {"system_prompt": f"{prompt} {a}.{v}", "model": "gpt-4o",
                      "temperature": 0.5, "max_tokens": 100 + v}
            records.append(Record(agent_id, v, checksum(config), config, "c" * 40,
                                  "A <a@b>", "2026-01-01T00:00:00+00:00", "m", "now"))
        history[agent_id] = records
    current = [records[-1] for records in history.values()]
    client = redis.Redis.from_url(url)
    results = {}
    try:
        for name in ("one transaction", "pipelines first"):
            namespace = "benchblock-" + name.split()[0]
            store = Store(client, namespace)
            state = {"seen": "c" * 40, "commit": "c" * 40, "revision": str(versions)}
            event = [Event("rebuilt", "c" * 40, versions, "e")]
            if name == "one transaction":
                write = Write(state, upserts=current, history=history, events=event,
                              replace_all=True)

                def run(write: Write = write, store: Store = store) -> None:
                    store.commit_transaction(write, expected_seen=None)
            else:
                write = Write(state, upserts=current, events=event, replace_all=True,
                              index={a: r[-1].version for a, r in history.items()})

                def run(write: Write = write, store: Store = store) -> None:
                    store.write_history(history)
                    store.commit_transaction(write, expected_seen=None)
            start = time.perf_counter()
            results[name] = _longest_wait_ms(url, run)
            results[name + " wall"] = time.perf_counter() - start
            client.delete(*client.keys(f"configsync:{{{namespace}}}:*"))
    finally:
        client.close()
    return results


def extends_chains(base: Path, chain: int, baseline_chain: int) -> dict[str, Any]:
    """``configsync validate`` on a chain of ``chain`` files, and BASELINE_REV's on
    ``baseline_chain`` files (it is quadratic: minutes at 3,000)."""
    def make(n: int) -> Path:
        root = base / f"chain{n}"
        (root / "agents").mkdir(parents=True)
        (root / "configsync.yaml").write_text("namespace: chain\n")
        (root / "agents" / "c0.yaml").write_text("system_prompt: base\nmodel: gpt-4o\n")
        for i in range(1, n):
            (root / "agents" / f"c{i}.yaml").write_text(f"extends: c{i - 1}\ntemperature: "
                                                        f"0.{i % 9}\n")
        return root

    def timed(root: Path, pythonpath: str | None = None) -> float:
        env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
        start = time.perf_counter()
        # cwd=root: `-m` puts the working directory first on sys.path, ahead of PYTHONPATH, so
        # run from the project the baseline would silently be today's code
        subprocess.run([sys.executable, "-m", "configsync", "validate", str(root)], cwd=root,
                       capture_output=True, env=env, timeout=3600, check=False)
        return time.perf_counter() - start

    print(f"[extends] validate on chains of {chain} and {baseline_chain} files ...",
          file=sys.stderr, flush=True)
    results: dict[str, Any] = {"chain": chain, "baseline_chain": baseline_chain,
                               "ours": timed(make(chain)), "ours_small": None, "before": None}
    small = make(baseline_chain)
    results["ours_small"] = timed(small)
    project = Path(__file__).resolve().parents[1]
    worktree = base / "baseline"
    added = subprocess.run(["git", "-C", str(project), "worktree", "add", "-q", "--detach",
                            str(worktree), BASELINE_REV], capture_output=True, check=False)
    if added.returncode == 0:
        try:
            results["before"] = timed(small, str(worktree))
        finally:
            subprocess.run(["git", "-C", str(project), "worktree", "remove", "--force",
                            str(worktree)], capture_output=True, check=False)
    return results


def report_history(walks: dict[str, float] | None, blocks: dict[str, float] | None,
                   chains: dict[str, Any] | None) -> bool:
    checks = []
    print(f"\n{'measure':<52}{'now':>12}{'before':>12}{'before/now':>12}")
    if walks:
        n = walks["commits"]
        print(f"{f'walk of a {n}-commit history (s)':<52}{walks['batched']:>12.2f}"
              f"{walks['per_commit']:>12.2f}{walks['per_commit'] / walks['batched']:>11.1f}x")
        print(f"{'  whole rebuild into Redis (s)':<52}{walks['rebuild']:>12.2f}{'-':>12}")
        ratio = walks["per_commit"] / walks["batched"]
        checks.append((f"rebuild walk of {n} commits at least 3x faster", ratio >= 3,
                       f"{ratio:.1f}x"))
    if blocks:
        now, before = blocks["pipelines first"], blocks["one transaction"]
        print(f"{'longest wait of another Redis client, rebuild (ms)':<52}{now:>12.1f}"
              f"{before:>12.1f}{before / max(now, 0.001):>11.1f}x")
        print(f"{'  wall time of those writes (s)':<52}{blocks['pipelines first wall']:>12.2f}"
              f"{blocks['one transaction wall']:>12.2f}")
    if chains:
        n, small = chains["chain"], chains["baseline_chain"]
        print(f"{f'validate, extends chain of {n} files (s)':<52}{chains['ours']:>12.2f}"
              f"{'-':>12}")
        before = chains["before"]
        shown = f"{before:>12.2f}" if before is not None else f"{'n/a':>12}"
        ratio = f"{before / chains['ours_small']:>11.1f}x" if before else f"{'':>12}"
        print(f"{f'validate, extends chain of {small} files (s)':<52}"
              f"{chains['ours_small']:>12.2f}{shown}{ratio}")
        checks.append((f"validate of a {n}-file chain under 5 s", chains["ours"] < 5,
                       f"{chains['ours']:.2f} s"))
    print("\ntargets:")
    for name, ok, got in checks:
        print(f"  {'[ok]' if ok else '[MISS]':<7}{name:<66}{got}")
    return all(ok for _, ok, _ in checks)


# -- the table ---------------------------------------------------------------------------------

def report(sizes: list[dict[str, Any]], pushes: list[float], big: int) -> bool:
    ms = 1000.0
    print(f"\n{'measure':<44}{'configsync':>14}{'naive':>12}{'naive/ours':>12}")
    for s in sizes:
        n = s["agents"]
        print(f"{f'initial sync, {n} agents (s)':<44}{s['initial']:>14.2f}"
              f"{s['naive_initial']:>12.2f}{s['naive_initial'] / s['initial']:>11.1f}x")
    for s in sizes:
        n = s["agents"]
        med, worst = statistics.median(s["ours"]), max(s["ours"])
        naive = statistics.median(s["naive"])
        label = f"one-file commit, {n} agents (ms)"
        print(f"{label:<44}{med * ms:>14.1f}{naive * ms:>12.0f}{naive / med:>11.1f}x")
        print(f"{'  max of ' + str(len(s['ours'])) + ' (ours) / of ' + str(len(s['naive'])):<44}"
              f"{worst * ms:>14.1f}{max(s['naive']) * ms:>12.0f}")
    if pushes:
        label = f"push -> updated event, p50 / p99 (ms, n={len(pushes)})"
        print(f"{label:<44}{percentile(pushes, 50) * ms:>7.0f} /{percentile(pushes, 99) * ms:>5.0f}"
              f"{'-':>12}")
    by_size = {s["agents"]: s for s in sizes}
    top = by_size[big]
    inc = statistics.median(top["ours"])
    ratio = statistics.median(top["naive"]) / inc
    small = min(by_size)
    small_inc = statistics.median(by_size[small]["ours"])
    checks = [
        (f"initial {big}-agent sync under 5 s", top["initial"] < 5.0,
         f"{top['initial']:.2f} s"),
        (f"incremental under 100 ms at {big} agents", inc < 0.1, f"{inc * ms:.1f} ms"),
        # "independent": at most 25% (plus 2 ms of noise) more for the bigger repository
        (f"incremental independent of repo size (<=+25%, {small} vs {big})",
         inc <= 1.25 * small_inc + 0.002, f"{small_inc * ms:.1f} -> {inc * ms:.1f} ms"),
        (f"naive at least 20x slower at {big}", ratio >= 20, f"{ratio:.1f}x"),
    ]
    print("\ntargets:")
    for name, ok, got in checks:
        mark = "[ok]" if ok else "[MISS]"
        print(f"  {mark:<7}{name:<66}{got}")
    print("\nnotes:")
    for s in sizes:
        print(f"  initial sync includes fetching the whole repository into an empty mirror "
              f"({s['fetch']:.2f} s alone at {s['agents']}).")
    print("  one-file commit: ours is from the start of Daemon.catch_up (after the fetch) until a "
          "subscriber\n  has the `updated` event; naive is a full pass (read + validate every "
          "file, SET + PUBLISH each).")
    if pushes:
        print("  push -> event runs `configsync sync --interval 0.2` as a subprocess on a "
              f"{PUSH_REPO_AGENTS}-agent repo;\n  latency includes up to one poll interval "
              "(200 ms) by design;\n  each push waits a random 0-200 ms first, so pushes land "
              "at random phases of the poll loop.")
    return all(ok for _, ok, _ in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history", type=int, default=5000, help="commits (0: skip)")
    parser.add_argument("--rebuild-agents", type=int, default=10_000, help="(0: skip)")
    parser.add_argument("--rebuild-versions", type=int, default=10)
    parser.add_argument("--chain", type=int, default=3000, help="extends chain (0: skip)")
    parser.add_argument("--chain-baseline", type=int, default=800)
    parser.add_argument("--only-history", action="store_true",
                        help="skip the sync and push measurements")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="configsync-bench-sync-"))
    os.environ["GIT_CONFIG_GLOBAL"] = str(base / "gitconfig")  # no user config, no hooks
    (base / "gitconfig").write_text("")
    server: RedisServer | None = None
    try:
        server = RedisServer(base / "redis", persist=False).start()
        ok = True
        if not args.only_history:
            sizes = [measure_size(base, server.url, n, args.seed)
                     for n in sorted({args.small, args.agents})]
            pushes = push_latency(base, server.url, args.pushes, args.seed) if args.pushes \
                else []
            print(f"\nconfigsync sync vs naive SET+PUBLISH, seed {args.seed}, {os.cpu_count()} "
                  "cores, one run on this machine, redis-server on 127.0.0.1")
            ok = report(sizes, pushes, args.agents)
        walks = history_walks(base, server.url, args.history, 50) if args.history else None
        blocks = rebuild_blocks(server.url, args.rebuild_agents, args.rebuild_versions) \
            if args.rebuild_agents else None
        chains = extends_chains(base, args.chain, args.chain_baseline) if args.chain else None
        print(f"\nlong histories, big rebuilds, extends chains ({os.cpu_count()} cores, one run)")
        ok = report_history(walks, blocks, chains) and ok
        return 0 if ok else 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
