"""One large commit reaching a client with a cache file: ``python bench/large_commit.py N``.

Makes a repository of N generated agents (as bench/validate.py does), syncs it with an
in-process Daemon into a throwaway redis-server, starts a ``Client`` with ``cache_path``,
then commits a change to every agent and measures from the start of ``Daemon.catch_up``
(after the fetch) until the client holds all N new versions *and* its cache file has them.
Prints one JSON line: ``{"agents": N, "seconds": ..., "catch_up": ...}``.

It uses only what every revision of configsync has (Daemon, Mirror, Store, Client), so
bench/client.py runs it against an older revision too, with that revision first on
``PYTHONPATH``, for the baseline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis

from configsync.client import Client
from configsync.embedded import RedisServer
from configsync.git import Mirror
from configsync.store import Store
from configsync.sync import Daemon

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Repo, git

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
    daemon: Daemon | None = None
    try:
        repo = Repo(base / "repo", agents, 1)
        daemon = Daemon(mirror=Mirror(base / "mirror", str(repo.remote)),
                        store=Store(redis.Redis.from_url(server.url), "large"))
        assert daemon.sync().applied
        ids = [repo.agent_id(i) for i in range(agents)]
        cache = base / "cache.json"
        with Client(redis=server.url, namespace="large", cache_path=cache) as client:
            deadline = time.monotonic() + 60
            while not cache_has(cache, agents, 1):
                if time.monotonic() > deadline:
                    raise TimeoutError("the client never wrote its first cache file")
                time.sleep(0.05)
            for path in repo.files:
                path.write_text(re.sub(r"(?m)^max_tokens: \d+$", "max_tokens: 4321",
                                       path.read_text(), count=1))
            git(repo.clone, "commit", "-q", "-am", "retune every agent")
            repo.push()
            daemon.mirror.fetch("main")
            head = daemon.mirror.head("main")
            start = time.perf_counter()
            result = daemon.catch_up(head)
            catch_up = time.perf_counter() - start
            assert result.applied, daemon.store.state().get("last_error")
            deadline = time.monotonic() + TIMEOUT
            while not (all(client.get(a).version == 2 for a in ids)
                       and cache_has(cache, agents, 2)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not there within {TIMEOUT:.0f} s")
                time.sleep(0.02)
            return {"agents": agents, "seconds": time.perf_counter() - start,
                    "catch_up": catch_up}
    finally:
        if daemon is not None:
            daemon.mirror.close()
            daemon.store.redis.close()
        server.stop()


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
