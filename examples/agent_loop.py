"""A toy agent that reads its config at every turn and hot-reloads while you edit and sync.

Run the daemon in one terminal (it prints the embedded Redis URL):

    configsync sync --interval 1

and this loop in another, with that URL:

    CONFIGSYNC_REDIS_URL=redis://127.0.0.1:PORT/0 python3 examples/agent_loop.py support

Then edit agents/support.yaml, commit, and watch the next turn pick up the new version. Each
"conversation" pins the version it started with; new conversations get the new one.
"""

from __future__ import annotations

import argparse
import os
import time

from configsync import Client, Snapshot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agent", nargs="?", default="support")
    parser.add_argument("--redis", default=os.environ.get("CONFIGSYNC_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--turns", type=int, default=0, help="stop after N turns (0: never)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between turns")
    args = parser.parse_args()

    def announce(agent_id: str, snap: Snapshot | None) -> None:
        print(f"  [reload] {agent_id} -> "
              f"{f'v{snap.version} ({snap.commit[:8]} by {snap.author})' if snap else 'deleted'}")

    with Client(redis=args.redis, namespace=args.namespace,
                cache_path=os.path.expanduser("~/.cache/configsync/agent_loop.json")) as client:
        client.on_change(announce, agent_id=args.agent)
        conversation: Snapshot | None = None
        turn = 0
        while args.turns == 0 or turn < args.turns:
            turn += 1
            if conversation is None or turn % 5 == 1:  # a new conversation every 5 turns
                conversation = client.get(args.agent)  # pin: this conversation keeps it
            config = conversation.config
            prompt = (config.system_prompt or "").strip().splitlines()[0][:60]
            stale = " (stale: Redis unreachable, serving last known good)" if client.stale else ""
            print(f"turn {turn}: {args.agent} v{conversation.version} model={config.model} "
                  f"temperature={config.temperature} prompt={prompt!r}{stale}")
            time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
