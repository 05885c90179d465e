"""The daemon's Prometheus metrics (``GET /metrics`` of ``configsync sync --listen``).

One :class:`Metrics` holds every metric in a registry of its own (never the process-wide
default one, which an embedding program may use for itself). The daemon updates it through
``Daemon.metrics`` (None when nothing listens): in-memory counters only, no Redis or git call
on its hot path. ``seconds behind`` is computed when scraped, from the committer time the
daemon noted after its last sync.

The values live in this process's memory, whatever the environment says (issue 17):
prometheus-client's own ``Counter``, ``Gauge`` and ``Histogram`` choose, at import, to keep
their values in files under ``PROMETHEUS_MULTIPROC_DIR`` when that variable is set (for an
application's gunicorn workers, say): set for a whole container, it made ``sync --listen``
crash on a missing folder, or write configsync's files into another program's folder. So the
metrics here are a :class:`~prometheus_client.registry.Collector` of our own (public API) that
reports plain in-memory values at each scrape; prometheus-client only formats them.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .errors import GitError

__all__ = ["CONTENT_TYPE", "Metrics", "fetch_error_kind", "redis_error_kind"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

WEBHOOK_OUTCOMES = ("accepted", "ignored", "unauthorized", "bad_request", "too_large")

HTTP_REFUSED = ("connections", "long_polls", "bodies", "slow_body")
"""The reasons of ``configsync_http_refused_total`` (the red team of issue 17, finding 3)."""


class _Metric:
    """One metric's name, help and label names; its children by label values (thread-safe)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.lock = threading.Lock()
        self.created = time.time()


class Counter(_Metric):
    """A counter (exposed as ``NAME_total`` and ``NAME_created``), with or without labels."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        # label values -> (value, created): an unlabelled counter has the one key ()
        self.values: dict[tuple[str, ...], list[float]] = (
            {} if labelnames else {(): [0.0, self.created]})

    def labels(self, *values: str) -> _Child:
        """The series for ``values`` (one per label name), made at first use."""
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values")
        with self.lock:
            self.values.setdefault(key, [0.0, time.time()])
        return _Child(self, key)

    def inc(self, amount: float = 1.0, key: tuple[str, ...] = ()) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self.lock:
            self.values[key][0] += amount

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self.lock:
            for key, (value, created) in self.values.items():
                family.add_metric(list(key), value, created=created)
        return family


class _Child:
    """One labelled series of a :class:`Counter`."""

    def __init__(self, counter: Counter, key: tuple[str, ...]) -> None:
        self.counter = counter
        self.key = key

    def inc(self, amount: float = 1.0) -> None:
        self.counter.inc(amount, self.key)


class Gauge(_Metric):
    """A gauge: a value that is set, or a function called at each scrape."""

    def __init__(self, name: str, documentation: str) -> None:
        super().__init__(name, documentation)
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        with self.lock:
            self.value = float(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.function = function

    def get(self) -> float:
        if self.function is not None:
            return self.function()
        with self.lock:
            return self.value

    def collect(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, value=self.get())


class Histogram(_Metric):
    """A histogram with fixed upper bounds (``+Inf`` added)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        super().__init__(name, documentation)
        self.bounds = [float(b) for b in buckets] + [math.inf]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        with self.lock:
            self.counts[bisect_left(self.bounds, amount)] += 1
            self.sum += amount

    def collect(self) -> Metric:
        with self.lock:
            counts, total = list(self.counts), self.sum
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds, counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), float(cumulative)))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        family.add_sample(self.name + "_created", {}, self.created)
        return family


class _Collector(Collector):
    def __init__(self, metrics: list[Counter | Gauge | Histogram]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.collect()


class Metrics:
    """Every metric of one daemon, in its own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.sync_duration = Histogram(
            "configsync_sync_duration_seconds",
            "Seconds one sync took (a fetch, then every commit up to the head), failed ones too",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.commits_applied = Counter(
            "configsync_commits_applied", "Commits applied (written to Redis) one by one; a "
            "rebuild counts in configsync_rebuilds_total instead")
        self.commits_rejected = Counter(
            "configsync_commits_rejected", "Commits rejected by validation (nothing written "
            "but the rejection)")
        self.rebuilds = Counter(
            "configsync_rebuilds", "Whole-state rebuilds from the branch history (a flushed "
            "Redis, a first start, a contract upgrade)")
        self.last_applied = Gauge(
            "configsync_last_applied_commit_timestamp_seconds",
            "Committer time (Unix seconds) of the commit Redis serves; 0 before any")
        self.last_fetch = Gauge(
            "configsync_last_successful_fetch_timestamp_seconds",
            "When (Unix seconds) the daemon last fetched the branch from its source; 0 before "
            "any. Alert on time() minus this: seconds behind is NaN while fetches fail")
        self.events = Counter(
            "configsync_events_published", "Events published (pub/sub and stream), by type",
            ["type"])
        self.fetch_errors = Counter(
            "configsync_fetch_errors", "Failed syncs because of git (fetch, or a git command "
            "on the mirror), by kind", ["kind"])
        self.redis_errors = Counter(
            "configsync_redis_errors", "Failed syncs because of Redis, by kind", ["kind"])
        self.webhooks = Counter(
            "configsync_webhook_requests", "POST /webhook requests, by outcome", ["outcome"])
        for outcome in WEBHOOK_OUTCOMES:  # every series from the start: rate() needs a zero
            self.webhooks.labels(outcome)
        self.http_refused = Counter(
            "configsync_http_refused", "Requests and connections of sync --listen refused "
            "for capacity, by reason (connections: over the connection limit; long_polls: a "
            "long poll over its share, answered at once; bodies: no webhook body slot; "
            "slow_body: a slow webhook body dropped for a newer one)", ["reason"])
        for reason in HTTP_REFUSED:
            self.http_refused.labels(reason)
        self.behind_since: float | None = None
        self.behind_known = True  # False while the last sync failed: nothing can be said
        behind = Gauge(
            "configsync_seconds_behind_remote",
            "Now minus the committer time of the oldest first-parent commit fetched but not "
            "served (after the served commit; the head itself after a force-push); 0 when "
            "the last sync served the fetched head; NaN (unknown) while the last sync failed")
        behind.set_function(self.seconds_behind)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector([
            self.sync_duration, self.commits_applied, self.commits_rejected, self.rebuilds,
            self.last_applied, self.last_fetch, self.events, self.fetch_errors,
            self.redis_errors, self.webhooks, self.http_refused, behind]))

    def seconds_behind(self, now: float | None = None) -> float:
        """Seconds the served commit is behind the fetched head: 0 when it is the head, NaN
        when the last sync failed (the daemon cannot know: its source, mirror or Redis
        failed)."""
        if not self.behind_known:
            return math.nan
        since = self.behind_since
        if since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - since)

    def synced(self, behind_since: float | None) -> None:
        """A sync succeeded; ``behind_since``: see :attr:`behind_since`."""
        self.behind_since = behind_since
        self.behind_known = True

    def fetched(self, at: float) -> None:
        """A fetch succeeded at ``at`` (Unix seconds)."""
        self.last_fetch.set(at)

    def applied(self, committed_at: float) -> None:
        """One commit applied; ``committed_at``: its committer time, Unix seconds."""
        self.commits_applied.inc()
        self.last_applied.set(committed_at)

    def published(self, types: list[str]) -> None:
        for kind in types:
            self.events.labels(kind).inc()

    def failed(self, exc: BaseException) -> None:
        """Count a sync that raised ``exc`` (a GitError, a Redis error; else nothing); seconds
        behind is unknown until a sync succeeds."""
        self.behind_known = False
        if isinstance(exc, redis.RedisError):
            self.redis_errors.labels(redis_error_kind(exc)).inc()
        elif isinstance(exc, GitError):
            self.fetch_errors.labels(fetch_error_kind(exc)).inc()
        elif isinstance(exc, OSError):
            self.fetch_errors.labels("io").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


def fetch_error_kind(exc: GitError) -> str:
    """``timeout`` (a deadline, or a stop), ``auth`` (credentials refused), else ``failed``
    (an OSError, such as a lost workdir, counts as ``io``)."""
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
