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
import hashlib
import os
import signal
import sys
import time

import redis

from configsync import Client, Snapshot, UnknownAgentError
from configsync.embedded import find_embedded
from configsync.errors import ConfigsyncError
from configsync.logs import one_line, redact_url
from configsync.redis_url import check_redis_url
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
    repository this runs in (found as ``configsync get`` finds it: ``embedded.find_embedded``;
    ``configsync.embedded_url()`` is the same, when that server runs), else None."""
    if os.environ.get("CONFIGSYNC_REDIS_URL"):
        return os.environ["CONFIGSYNC_REDIS_URL"]
    found = find_embedded()
    return found.url if found is not None else None  # a stopped one: serve the cache


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {text})")
    return value


def _name(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops it, even when
    # started where SIGINT was ignored (a background job of a script)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("agent", nargs="?", default="support")
    parser.add_argument("--redis", default=None, help="Redis URL (default: "
                        "$CONFIGSYNC_REDIS_URL, else the one the daemon's embedded Redis "
                        "wrote for this repository, GIT_DIR/configsync/redis.url)")
    parser.add_argument("--namespace", type=_name, default=None,
                        help="namespace to read (default: $CONFIGSYNC_NAMESPACE, else default)")
    parser.add_argument("--turns", type=int, default=0, help="stop after N turns (0: never)")
    parser.add_argument("--pause", type=_not_negative, default=1.0,
                        help="seconds between turns")
    parser.add_argument("--cache", default=None, help="last-known-good cache file (default: "
                        "~/.cache/configsync/agent_loop-NAMESPACE-HASH.json, HASH of the URL)")
    args = parser.parse_args(argv)
    if args.turns < 0:
        parser.error(f"--turns must be 0 or more (got {args.turns})")
    url = args.redis or _default_redis()
    if url is None:
        print("agent_loop: no Redis URL: start `configsync sync` in this repository (it writes "
              "the URL), or pass --redis, or set CONFIGSYNC_REDIS_URL", file=sys.stderr)
        return 2
    shown = one_line(redact_url(url))
    namespace = args.namespace or os.environ.get("CONFIGSYNC_NAMESPACE") or "default"
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:8]
    cache = args.cache or os.path.expanduser(
        f"~/.cache/configsync/agent_loop-{namespace}-{digest}.json")
    print(f"reading namespace {one_line(namespace)!r} from {shown}", flush=True)
    try:
        check_redis_url(url, "--redis")
        return _loop(args, url, namespace, cache)
    except ConfigsyncError as exc:  # a URL that is no Redis URL, said in one line
        print(f"agent_loop: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _loop(args: argparse.Namespace, url: str, namespace: str, cache: str) -> int:
    def announce(agent_id: str, snap: Snapshot | None) -> None:
        made = f"v{snap.version} ({snap.commit[:8]} by {one_line(snap.author)})" if snap \
            else "deleted"
        print(f"  [reload] {agent_id} -> {made}", flush=True)

    with Client(redis=url, namespace=namespace, cache_path=cache) as client:
        # replay=False: the loop reads the config at every turn; announce changes only
        client.on_change(announce, agent_id=args.agent, replay=False)
        conversation: Snapshot | None = None
        served = False  # had a config: its absence now means it was deleted in git
        turn = 0
        while args.turns == 0 or turn < args.turns:
            turn += 1
            if conversation is None or turn % 5 == 1:  # a new conversation every 5 turns
                # pin: this conversation keeps it; None when the agent is unknown or deleted
                conversation = client.get(args.agent, default=None)
            if conversation is None:
                if not served:
                    exc = UnknownAgentError(args.agent, sorted(client.status().versions))
                    print(f"agent_loop: {_why_not(client, exc, url, namespace, args)}",
                          file=sys.stderr)
                    return 1
                print(f"turn {turn}: {args.agent} was deleted from the config repository; "
                      "no new conversations until it is back", flush=True)
                time.sleep(args.pause)
                continue
            served = True
            config = conversation.config
            prompt = (config.system_prompt or "").strip().splitlines()[0][:60]
            stale = " (stale: Redis unreachable, serving last known good)" if client.stale else ""
            print(f"turn {turn}: {args.agent} v{conversation.version} model={config.model} "
                  f"temperature={config.temperature} prompt={prompt!r}{stale}", flush=True)
            time.sleep(args.pause)
    return 0


def _why_not(client: Client, exc: UnknownAgentError, url: str, namespace: str,
             args: argparse.Namespace) -> str:
    status = client.status()
    if status.versions:
        return str(exc)
    if not status.connected:
        return (f"cannot read Redis at {one_line(redact_url(url))} "
                f"({status.connection_error}) and no configs are cached; is the daemon "
                "running? (it prints the URL to use)")
    return _empty(url, namespace, args.namespace is not None)


if __name__ == "__main__":
    raise SystemExit(main())
