"""``configsync status``: what git holds next to what Redis serves, for a check or a person.

Exit codes: 0 in sync (Redis serves the branch head); 1 behind, last commit rejected, or no
state yet; 2 Redis unreachable (or a usage mistake). Agents are compared by checksum: the
head's resolved config (the daemon's own validation code) against the snapshot Redis serves.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from . import heartbeat
from .client import is_wrong_type, text, wrong_type
from .errors import ConfigsyncError, CorruptDataError, UsageError
from .escape import json_text, one_line, text_lines
from .git import GitRepo
from .history import ShallowHistory, daemon_start, versions_at
from .logs import redact_url
from .read_cli import default_namespace, redis_url_given
from .redis_url import from_url, redis_failure
from .redis_values import last_error
from .repo import GitSource
from .snapshot import Record, checksum
from .store import Keys, Store
from .sync import Applied
from .validate import check_tree

__all__ = ["AgentStatus", "Status", "run_status"]

IN_SYNC, BEHIND, REJECTED, NO_STATE, UNKNOWN_COMMIT, DIVERGED = (
    "in_sync", "behind", "rejected", "no_state", "unknown_commit", "diverged")


@dataclass
class AgentStatus:
    """One agent: its checksum at the head, the version the head's config gets in this
    namespace (:func:`.history.versions_at`, going on from what Redis serves as the daemon's
    next walk does, else a replay of the branch; None when it is no version, as when the
    head is rejected), and the version Redis serves."""

    agent_id: str
    git_checksum: str | None  # None: not at the head (deleted, or invalid there)
    head_version: int | None
    redis_version: int | None
    redis_checksum: str | None

    @property
    def compare(self) -> str:
        if self.git_checksum is None:
            return "only_in_redis"
        if self.redis_checksum is None:
            return "only_in_git"
        return "same" if self.git_checksum == self.redis_checksum else "differs"


@dataclass
class Status:
    """Everything ``configsync status`` reports."""

    namespace: str
    branch: str
    head: str
    state: str  # IN_SYNC, BEHIND, REJECTED, NO_STATE, UNKNOWN_COMMIT
    served: str = ""  # state.commit
    behind: int | None = None
    error: dict[str, Any] | None = None
    revision: int = 0
    heartbeat_at: str = ""
    heartbeat_age: float | None = None
    daemon_alive: bool | None = None  # heartbeat.py's verdict: False when no daemon beats
    silence_limit: float | None = None  # the heartbeat age beyond which it is False (s)
    agents: list[AgentStatus] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    shallow: bool = False  # a shallow clone: no git version numbers (checksums still compare)
    warnings: list[str] = field(default_factory=list)  # stderr: what Redis holds that is bad

    @property
    def exit_code(self) -> int:
        """0 in sync with a daemon beating; 1 for any problem found: not in sync, or a
        daemon gone silent (``daemon_alive`` False: ``configsync status || alert`` must see
        a killed daemon, issue 17, red team finding 5)."""
        return 0 if self.state == IN_SYNC and self.daemon_alive is not False else 1

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("agents", "warnings")}
        data["agents"] = [{**asdict(a), "compare": a.compare} for a in self.agents]
        return data


def _age(stamp: str, now: datetime) -> float | None:
    age = heartbeat.age(stamp, now)
    return None if age is None else round(age, 1)


def collect(repo: GitRepo, store: Store, *, branch: str | None,
            now: datetime | None = None) -> Status:
    """The status of ``store``'s namespace against ``repo``'s branch (default: the one the
    state follows, else the checked-out one). Raises redis errors as they come."""
    if not repo.has_commits():
        raise UsageError("the repository has no commits yet: there is nothing to compare with "
                         "what Redis serves")
    state = store.state()
    branch = branch or state.get("branch") or repo.current_branch()
    if not branch:
        raise UsageError("HEAD is detached and the namespace names no branch; pass --branch")
    head = repo.resolve(branch)
    status = Status(store.keys.namespace, branch, head, NO_STATE)
    current = store.current()
    try:
        applied, report = versions_at(repo, head, repo_root=repo.top,
                                      start=_served(repo, store, state, current, head))
    except ShallowHistory:  # no version numbers from git; the checksums still compare
        applied, report = Applied(), check_tree(GitSource(repo, head), repo_root=repo.top)
        status.shallow = True
    ids = sorted(set(report.configs) | set(current))
    digests = {a: checksum(config) for a, config in report.configs.items()}
    status.agents = [AgentStatus(
        a, digests.get(a),
        applied.versions[a][0] if a in applied.versions and applied.versions[a][1]
        == digests.get(a) else None,
        current[a].version if a in current else None,
        current[a].checksum if a in current else None) for a in ids]
    status.clients = store.client_reports()
    if "seen" not in state:
        return status
    served, seen = state.get("commit", ""), state.get("seen", "")
    status.served = served
    status.revision = int(state.get("revision") or 0)
    status.heartbeat_at = state.get("heartbeat_at", "")
    status.heartbeat_age = _age(status.heartbeat_at, now or datetime.now(UTC))
    status.silence_limit = heartbeat.silence_limit(state)
    status.daemon_alive = heartbeat.alive(status.heartbeat_age, status.silence_limit) \
        if heartbeat.beats(state) else None
    try:
        status.error = last_error(state, store.keys.state)
    except CorruptDataError as exc:  # said, and the rest still shown (red team of 17, item 1)
        status.warnings.append(f"{exc}; read as none")
    if served == head:
        status.state = IN_SYNC
    elif status.error is not None and seen == head:
        status.state = REJECTED
    elif served and not repo.has_commit(served):
        status.state = UNKNOWN_COMMIT
    elif served and not repo.is_ancestor(served, head):
        status.state = DIVERGED
    else:
        status.state = BEHIND
        status.behind = repo.count_commits(served or None, head)
    return status


def _served(repo: GitRepo, store: Store, state: dict[str, str], current: dict[str, Record],
            head: str) -> Applied | None:
    """What the daemon serves, as the start of its next walk (:func:`.history.daemon_start`):
    the head's versions then cost the commits after it, and are the numbers that daemon will
    give."""
    return daemon_start(repo, head, state.get("commit"), int(state.get("revision") or 0),
                        {a: (r.version, r.checksum) for a, r in current.items()},
                        store.last_versions() if state.get("commit") else {},
                        ancestor_only=False)


def _short(sha: str) -> str:
    return sha[:12] if sha else "(none)"


def render_text(status: Status) -> str:
    lines = [f"namespace {status.namespace}, branch {status.branch} at {_short(status.head)}"]
    if status.state == NO_STATE:
        lines.append("no state: no daemon has synced this namespace in this Redis")
    else:
        served = f"Redis serves {_short(status.served)} (revision {status.revision})"
        if status.state == IN_SYNC:
            lines.append(f"in sync: {served}")
        elif status.state == REJECTED:
            lines.append(f"last commit rejected: {served}")
        elif status.state == UNKNOWN_COMMIT:
            lines.append(f"{served}, a commit this repository does not have (git fetch?)")
        elif status.state == DIVERGED:
            lines.append(f"diverged: {served}, which is not in the branch's history (a "
                         "force-push: the daemon applies the new head once two fetches agree)")
        else:
            lines.append(f"behind by {status.behind} commit{'s' * (status.behind != 1)}: "
                         f"{served}")
        if status.error is not None:
            e = status.error
            lines.append(f"last error (commit {_short(str(e.get('commit', '')))}): "
                         f"{e.get('file')}:{e.get('line')}:{e.get('column')}: "
                         f"{one_line(str(e.get('message')))}")
        age = ("unknown" if status.heartbeat_age is None
               else f"{status.heartbeat_age:.0f}s ago")
        silent = "" if status.daemon_alive is not False else (
            f": no daemon is writing this namespace (silent beyond {status.silence_limit:g}s; "
            "is `configsync sync` running?)")
        lines.append(f"heartbeat {age} ({status.heartbeat_at or 'never'}){silent}")
    lines.append("agents (the version the head gets in this namespace, vs what Redis serves):"
                 + (" (head versions unknown: a shallow clone; git fetch --unshallow)"
                    if status.shallow else ""))
    for a in status.agents:
        served = "-" if a.redis_version is None else f"v{a.redis_version}"
        at_head = "-" if a.head_version is None else f"v{a.head_version}"
        lines.append(f"  {a.agent_id}  head {at_head}  redis {served}  "
                     f"{a.compare.replace('_', ' ')}")
    lines.append(f"clients: {len(status.clients)}")
    for c in status.clients:
        versions = c.get("versions")  # a report is anyone's: it may not even be a mapping
        held = ", ".join(f"{k} v{v}" for k, v in sorted(versions.items())) \
            if isinstance(versions, dict) else ""
        said = {n: "-" if c.get(n) is None else c[n] for n in ("instance_id", "host", "pid")}
        lines.append(f"  {said['instance_id']} {said['host']} pid {said['pid']} "
                     f"revision {c.get('revision', '-')}: {held or 'nothing'}"
                     f"{' (stale)' if c.get('stale') else ''}")
    return text_lines(lines)  # every line escaped: clients' reports and errors are anyone's


def _wrong_typed(client: redis.Redis, keys: Keys) -> ConfigsyncError | None:
    """After a ``WRONGTYPE`` reply: the namespace key that holds another kind of value than
    configsync writes there, as :class:`CorruptDataError` naming it (red team finding 6);
    None when Redis cannot be asked."""
    try:
        return _find_wrong_typed(client, keys)
    except redis.RedisError:
        return None


def _find_wrong_typed(client: redis.Redis, keys: Keys) -> ConfigsyncError:
    expected = {keys.state: "hash", keys.current: "hash", keys.agents: "hash",
                keys.events: "stream"}
    expected.update({text(k): "hash" for k in client.scan_iter(keys.history_pattern,
                                                                count=1000)})
    for key, kind in expected.items():
        found = text(client.type(key))
        if found not in (kind, "none"):
            return wrong_type(key, found, kind)
    return CorruptDataError(f"a key of namespace {keys.namespace} holds another kind of value "
                            "than configsync writes there (Redis: WRONGTYPE)")


def run_status(args: argparse.Namespace) -> int:
    """``configsync status``: print the status; exit 0 in sync (and a daemon beating), 1 not,
    2 unreachable."""
    url, origin = redis_url_given(args.redis, workdir=args.workdir, repo=args.repo,
                                  unreachable=UsageError)  # exit 2: unreachable
    # (the same rules as get and watch; the embedded Redis is --repo's)
    client = from_url(redis.Redis, url, origin, socket_timeout=5, socket_connect_timeout=5)
    with GitRepo(args.repo or ".") as repo:
        namespace = args.namespace or default_namespace(args.repo or os.curdir)
        try:
            status = collect(repo, Store(client, namespace), branch=args.branch)
        except redis.RedisError as exc:
            corrupt = _wrong_typed(client, Keys(namespace)) if is_wrong_type(exc) else None
            if corrupt is not None:  # corrupt data, not an unreachable Redis: exit 1
                raise corrupt from None
            print(f"configsync: error: {one_line(redis_failure(exc, client))} "
                  f"[{one_line(redact_url(url))}]", file=sys.stderr)
            return 2
        finally:
            client.close()
    for warning in status.warnings:
        print(f"configsync: warning: {one_line(warning)}", file=sys.stderr)
    if args.format == "json":
        sys.stdout.write(json_text(status.to_json()))
    else:
        sys.stdout.write(render_text(status))
    return status.exit_code
