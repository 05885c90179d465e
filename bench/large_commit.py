"""One large commit reaching a client with a cache file: ``python bench/large_commit.py N``.

Makes a repository of N generated agents (as bench/validate.py does) in a bare remote, runs
``configsync sync --interval 0.2`` over it as a subprocess (as on a server: it parses a big
commit on every core) into a throwaway redis-server, starts a ``Client`` with ``cache_path``,
then commits a change to every agent, pushes, and measures from ``git push`` returning until
the client holds all N new versions *and* its cache file has them (``seconds``: up to one poll
interval, 0.2 s, is in it by design), and until the daemon's state names the commit
(``daemon``: its fetch, check and transaction). Prints one JSON line:
``{"agents": N, "seconds": ..., "daemon": ...}``.

It uses only what every revision of configsync has (``configsync sync`` and its options,
Client), so bench/client.py runs it against an older revision too, with that revision first on
``PYTHONPATH``, for the baseline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from configsync.client import Client
from configsync.embedded import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Repo, git, stop

TIMEOUT = float(os.environ.get("LARGE_COMMIT_TIMEOUT", "600"))


def cache_has(path: Path, agents: int, version: int) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    snaps = data.get("snapshots", [])
    return len(snaps) == agents and all(s["version"] == version for s in snaps)


def measure(base: Path, agents: int) -> dict[str, float]:
    server = RedisServer(base / "redis", persist=False).start()
    state = redis.Redis.from_url(server.url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        repo = Repo(base / "repo", agents, 1)
        with (base / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "configsync", "sync", "--repo", str(repo.remote),
                 "--redis", server.url, "--namespace", "large", "--interval", "0.2",
                 "--workdir", str(base / "daemon")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=base)
        first = git(repo.clone, "rev-parse", "HEAD")
        until(lambda: state.hget("configsync:{large}:state", "commit") == first.encode(), 120,
              "the daemon's first sync")
        ids = [repo.agent_id(i) for i in range(agents)]
        cache = base / "cache.json"
        with Client(redis=server.url, namespace="large", cache_path=cache) as client:
            until(lambda: cache_has(cache, agents, 1), 60, "the client's first cache file")
            for path in repo.files:
                path.write_text(re.sub(r"(?m)^max_tokens: \d+$", "max_tokens: 4321",
                                       path.read_text(), count=1))
            git(repo.clone, "commit", "-q", "-am", "retune every agent")
            head = git(repo.clone, "rev-parse", "HEAD").encode()
            repo.push()
            start = time.perf_counter()
            daemon: list[float] = []

            def arrived() -> bool:
                if not daemon and state.hget("configsync:{large}:state", "commit") == head:
                    daemon.append(time.perf_counter() - start)
                # cheap first: this polling shares the GIL with the client it measures
                return (client.get(ids[-1]).version == 2 and client.get(ids[0]).version == 2
                        and all(client.get(a).version == 2 for a in ids)
                        and cache_has(cache, agents, 2))

            until(arrived, TIMEOUT, "the commit at the client")
            seconds = time.perf_counter() - start
            return {"agents": agents, "seconds": seconds,
                    "daemon": daemon[0] if daemon else seconds}
    finally:
        if proc is not None:
            stop(proc)
        state.close()
        server.stop()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def main() -> int:
    agents = int(sys.argv[1])
    base = Path(tempfile.mkdtemp(prefix="configsync-bench-large-"))
    os.environ["GIT_CONFIG_GLOBAL"] = str(base / "gitconfig")
    (base / "gitconfig").write_text("")
    try:
        print(json.dumps(measure(base, agents)), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
