"""A toy agent that reads its config at every turn and hot-reloads while you edit and sync.

Run the daemon in one terminal (it prints the embedded Redis URL):

    configsync sync --interval 1

and this loop in another, with that URL:

    CONFIGSYNC_REDIS_URL=redis://127.0.0.1:PORT/0 python examples/agent_loop.py support

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

import redis

from configsync import Client, Snapshot, UnknownAgentError
from configsync.logs import redact_url
from configsync.store import namespaces


def _empty(url: str, namespace: str) -> str:
    """Why a connected client holds nothing, and what to try."""
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as connection:
            others = [n for n in namespaces(connection) if n != namespace]
    except (redis.RedisError, OSError):
        others = []
    hint = (f"the daemon writes {', '.join(repr(n) for n in others)} here: pass --namespace "
            f"{others[0]} or set CONFIGSYNC_NAMESPACE" if others else
            "is the daemon running, and with this Redis URL?")
    return f"no configs in namespace {namespace!r}; {hint}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("agent", nargs="?", default="support")
    parser.add_argument("--redis", default=os.environ.get("CONFIGSYNC_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("CONFIGSYNC_NAMESPACE") or "default",
                        help="namespace to read (default: $CONFIGSYNC_NAMESPACE, else default)")
    parser.add_argument("--turns", type=int, default=0, help="stop after N turns (0: never)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between turns")
    parser.add_argument("--cache", default=None, help="last-known-good cache file (default: "
                        "~/.cache/configsync/agent_loop-NAMESPACE.json)")
    args = parser.parse_args(argv)
    cache = args.cache or os.path.expanduser(
        f"~/.cache/configsync/agent_loop-{args.namespace}.json")
    print(f"reading namespace {args.namespace!r} from {redact_url(args.redis)}", flush=True)

    def announce(agent_id: str, snap: Snapshot | None) -> None:
        print(f"  [reload] {agent_id} -> "
              f"{f'v{snap.version} ({snap.commit[:8]} by {snap.author})' if snap else 'deleted'}",
              flush=True)

    with Client(redis=args.redis, namespace=args.namespace, cache_path=cache) as client:
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
                        print(f"agent_loop: cannot reach Redis at {redact_url(args.redis)} "
                              "and no configs are cached; is the daemon running? (it prints "
                              "the URL to use)", file=sys.stderr)
                    else:
                        print(f"agent_loop: {_empty(args.redis, args.namespace)}",
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
