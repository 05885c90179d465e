"""The daemon's Prometheus metrics (``GET /metrics`` of ``configsync sync --listen``).

One :class:`Metrics` holds every metric object in a registry of its own (never the process-wide
default one, which an embedding program may use for itself). The daemon updates it through
``Daemon.metrics`` (None when nothing listens): in-memory counters only, no Redis or git call
on its hot path. ``seconds behind`` is computed when scraped, from the committer time the
daemon noted after its last sync.
"""

from __future__ import annotations

import time

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import GitError

__all__ = ["CONTENT_TYPE", "Metrics", "fetch_error_kind", "redis_error_kind"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

WEBHOOK_OUTCOMES = ("accepted", "ignored", "unauthorized", "bad_request", "too_large")


class Metrics:
    """Every metric of one daemon, in its own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sync_duration = Histogram(
            "configsync_sync_duration_seconds",
            "Seconds one sync took (a fetch, then every commit up to the head), failed ones too",
            registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.commits_applied = Counter(
            "configsync_commits_applied", "Commits applied (written to Redis) one by one; a "
            "rebuild counts in configsync_rebuilds_total instead", registry=r)
        self.commits_rejected = Counter(
            "configsync_commits_rejected", "Commits rejected by validation (nothing written "
            "but the rejection)", registry=r)
        self.rebuilds = Counter(
            "configsync_rebuilds", "Whole-state rebuilds from the branch history (a flushed "
            "Redis, a first start, a contract upgrade)", registry=r)
        self.last_applied = Gauge(
            "configsync_last_applied_commit_timestamp_seconds",
            "Committer time (Unix seconds) of the commit Redis serves; 0 before any",
            registry=r)
        self.events = Counter(
            "configsync_events_published", "Events published (pub/sub and stream), by type",
            ["type"], registry=r)
        self.fetch_errors = Counter(
            "configsync_fetch_errors", "Failed syncs because of git (fetch, or a git command "
            "on the mirror), by kind", ["kind"], registry=r)
        self.redis_errors = Counter(
            "configsync_redis_errors", "Failed syncs because of Redis, by kind", ["kind"],
            registry=r)
        self.webhooks = Counter(
            "configsync_webhook_requests", "POST /webhook requests, by outcome", ["outcome"],
            registry=r)
        for outcome in WEBHOOK_OUTCOMES:  # every series from the start: rate() needs a zero
            self.webhooks.labels(outcome)
        self.behind_since: float | None = None
        behind = Gauge(
            "configsync_seconds_behind_remote",
            "Now minus the committer time of the oldest first-parent commit fetched but not "
            "served (after the served commit; the head itself after a force-push); 0 when "
            "the last sync served the fetched head", registry=r)
        behind.set_function(self.seconds_behind)

    def seconds_behind(self, now: float | None = None) -> float:
        since = self.behind_since
        if since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - since)

    def applied(self, committed_at: float) -> None:
        """One commit applied; ``committed_at``: its committer time, Unix seconds."""
        self.commits_applied.inc()
        self.last_applied.set(committed_at)

    def published(self, types: list[str]) -> None:
        for kind in types:
            self.events.labels(kind).inc()

    def failed(self, exc: BaseException) -> None:
        """Count a sync that raised ``exc`` (a GitError, a Redis error; else nothing)."""
        if isinstance(exc, redis.RedisError):
            self.redis_errors.labels(redis_error_kind(exc)).inc()
        elif isinstance(exc, GitError):
            self.fetch_errors.labels(fetch_error_kind(exc)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


def fetch_error_kind(exc: GitError) -> str:
    """``timeout`` (a deadline, or a stop), ``auth`` (credentials refused), else ``failed``."""
    message = str(exc)
    if "timed out after" in message:
        return "timeout"
    if "check the credentials" in message:
        return "auth"
    return "failed"


def redis_error_kind(exc: redis.RedisError) -> str:
    """``timeout``, ``auth``, ``connection``, ``response`` (an error reply), else ``other``."""
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.AuthenticationError):
        return "auth"
    if isinstance(exc, redis.ConnectionError):
        return "connection"
    if isinstance(exc, redis.ResponseError):
        return "response"
    return "other"
