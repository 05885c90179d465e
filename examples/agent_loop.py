"""A toy agent that reads its config at every turn and hot-reloads while you edit and sync.

Run the daemon in one terminal (it prints the embedded Redis URL, and writes it in
.git/configsync/redis.url):

    configsync sync --interval 1

and this loop in another, in the same repository (or with CONFIGSYNC_REDIS_URL, or --redis):

    python examples/agent_loop.py support

Then edit agents/support.yaml, commit, and watch the next turn pick up the new version. Each
"conversation" pins the version it started with; new conversations get the new one. The
namespace is ``--namespace``, else ``$CONFIGSYNC_NAMESPACE``, else ``default`` (what the daemon
writes when configsync.yaml says nothing else).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import redis

from configsync import Client, Snapshot, UnknownAgentError
from configsync.logs import redact_url
from configsync.store import namespaces


def _empty(url: str, namespace: str, flag: bool) -> str:
    """Why a connected client holds nothing, and what to try."""
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as connection:
            others = [n for n in namespaces(connection) if n != namespace]
    except (redis.RedisError, OSError):
        others = []
    where = "pass --namespace" if flag else "pass --namespace or set CONFIGSYNC_NAMESPACE to"
    hint = (f"the daemon writes {', '.join(repr(n) for n in others)} here: {where} "
            f"{others[0]}" if others else "is the daemon running, and with this Redis URL?")
    return f"no configs in namespace {namespace!r}; {hint}"


def _default_redis() -> str | None:
    """$CONFIGSYNC_REDIS_URL, else the URL the daemon's embedded Redis wrote for the git
    repository this runs in (.git/configsync/redis.url), else None."""
    if os.environ.get("CONFIGSYNC_REDIS_URL"):
        return os.environ["CONFIGSYNC_REDIS_URL"]
    folder = Path.cwd()
    for here in (folder, *folder.parents):
        written = here / ".git" / "configsync" / "redis.url"
        if written.is_file():
            return written.read_text().strip() or None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("agent", nargs="?", default="support")
    parser.add_argument("--redis", default=None, help="Redis URL (default: "
                        "$CONFIGSYNC_REDIS_URL, else the one the daemon's embedded Redis "
                        "wrote in this repository's .git/configsync/redis.url)")
    parser.add_argument("--namespace", default=None,
                        help="namespace to read (default: $CONFIGSYNC_NAMESPACE, else default)")
    parser.add_argument("--turns", type=int, default=0, help="stop after N turns (0: never)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between turns")
    parser.add_argument("--cache", default=None, help="last-known-good cache file (default: "
                        "~/.cache/configsync/agent_loop-NAMESPACE.json)")
    args = parser.parse_args(argv)
    url = args.redis or _default_redis()
    if url is None:
        print("agent_loop: no Redis URL: start `configsync sync` in this repository (it writes "
              "the URL), or pass --redis, or set CONFIGSYNC_REDIS_URL", file=sys.stderr)
        return 2
    namespace = args.namespace or os.environ.get("CONFIGSYNC_NAMESPACE") or "default"
    cache = args.cache or os.path.expanduser(f"~/.cache/configsync/agent_loop-{namespace}.json")
    print(f"reading namespace {namespace!r} from {redact_url(url)}", flush=True)
    try:
        return _loop(args, url, namespace, cache)
    except ValueError as exc:  # redis-py's word on a URL it cannot use
        print(f"agent_loop: {redact_url(url)!r} is not a Redis URL ({exc}); write "
              "redis://HOST:PORT/DB", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _loop(args: argparse.Namespace, url: str, namespace: str, cache: str) -> int:
    def announce(agent_id: str, snap: Snapshot | None) -> None:
        print(f"  [reload] {agent_id} -> "
              f"{f'v{snap.version} ({snap.commit[:8]} by {snap.author})' if snap else 'deleted'}",
              flush=True)

    with Client(redis=url, namespace=namespace, cache_path=cache) as client:
        client.on_change(announce, agent_id=args.agent)
        conversation: Snapshot | None = None
        turn = 0
        while args.turns == 0 or turn < args.turns:
            turn += 1
            if conversation is None or turn % 5 == 1:  # a new conversation every 5 turns
                try:
                    conversation = client.get(args.agent)  # pin: this conversation keeps it
                except UnknownAgentError as exc:
                    status = client.status()
                    if status.versions:
                        print(f"agent_loop: {exc}", file=sys.stderr)
                    elif not status.connected:
                        print(f"agent_loop: cannot read Redis at {redact_url(url)} "
                              f"({status.last_error}) and no configs are cached; is the daemon "
                              "running? (it prints the URL to use)", file=sys.stderr)
                    else:
                        print(f"agent_loop: {_empty(url, namespace, args.namespace is not None)}",
                              file=sys.stderr)
                    return 1
            config = conversation.config
            prompt = (config.system_prompt or "").strip().splitlines()[0][:60]
            stale = " (stale: Redis unreachable, serving last known good)" if client.stale else ""
            print(f"turn {turn}: {args.agent} v{conversation.version} model={config.model} "
                  f"temperature={config.temperature} prompt={prompt!r}{stale}", flush=True)
            time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
