"""A prometheus-client collector for agent processes that already export metrics.

::

    from prometheus_client import REGISTRY
    from configsync.client_metrics import ClientCollector

    REGISTRY.register(ClientCollector(client))      # a Client or an AsyncClient
    REGISTRY.register(ClientCollector(prod, dev))   # several clients: one collector for all

Four gauges, labelled with each client's namespace, computed at every scrape (nothing runs in
between); clients of several namespaces share one collector (two collectors in one registry
would declare the same metric twice, which prometheus-client refuses):

* ``configsync_client_config_age_seconds``: seconds since the client last read the
  namespace's ``state`` from Redis (``ClientStatus.state_age``); it reads it at least every
  ``check_interval`` (30 s by default) while connected, so alert on an age well beyond that.
  No sample before the first read.
* ``configsync_client_stale``: 1 while the client is stale (no state read from Redis yet, or
  disconnected: it serves what it holds) or stopped, else 0.
* ``configsync_client_daemon_heartbeat_age_seconds``: seconds since the daemon's last
  heartbeat, as the client last read it (``ClientStatus.heartbeat_age``). No sample before
  the first read.
* ``configsync_client_daemon_alive``: 0 when that heartbeat is older than the limit of
  :mod:`configsync.heartbeat` (``3 × state.heartbeat_every + 10`` s: 40 s with the daemon's
  default interval), so no daemon is writing the namespace and the configs may be behind git;
  1 while it beats. No sample while the client cannot tell (disconnected, never read, stopped:
  ``configsync_client_stale`` says so).

``prometheus-client`` is an optional dependency (``pip install 'configsync[metrics]'``); the
client library itself never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "configsync.client_metrics needs prometheus-client: pip install "
        "'configsync[metrics]' (or prometheus-client>=0.20)") from exc

from .client import ClientCore

__all__ = ["ClientCollector"]


class ClientCollector(Collector):
    """Collects the health of one or more clients for a prometheus-client registry (see the
    module docstring): one sample per client and gauge, labelled with its namespace. Two
    clients of one namespace would give two samples with the same labels: give them
    registries of their own. :meth:`add` takes a client created later."""

    def __init__(self, *clients: ClientCore[Any]) -> None:
        self.clients = list(clients)

    def add(self, client: ClientCore[Any]) -> None:
        self.clients.append(client)

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "configsync_client_config_age_seconds",
            "Seconds since this configsync client last read the namespace's state from Redis",
            labels=["namespace"])
        stale = GaugeMetricFamily(
            "configsync_client_stale",
            "1 while this configsync client serves what it holds without Redis confirming it "
            "(never read, disconnected, or stopped)", labels=["namespace"])
        beat = GaugeMetricFamily(
            "configsync_client_daemon_heartbeat_age_seconds",
            "Seconds since the configsync daemon's last heartbeat, as this client last read it",
            labels=["namespace"])
        alive = GaugeMetricFamily(
            "configsync_client_daemon_alive",
            "0 when the configsync daemon's heartbeat is older than its silence limit (no "
            "daemon writes the namespace), 1 while it beats", labels=["namespace"])
        for client in self.clients:
            seconds = client.state_age
            if seconds is not None:
                age.add_metric([client.namespace], seconds)
            stale.add_metric([client.namespace], 1.0 if client.stale or client.closed else 0.0)
            beat_age = client.heartbeat_age
            if beat_age is not None:
                beat.add_metric([client.namespace], beat_age)
            verdict = client.daemon_alive
            if verdict is not None:
                alive.add_metric([client.namespace], 1.0 if verdict else 0.0)
        yield age
        yield stale
        yield beat
        yield alive

    def describe(self) -> Iterator[Metric]:
        # the families without samples: registering needs no scrape of the clients
        yield GaugeMetricFamily("configsync_client_config_age_seconds", "", labels=["namespace"])
        yield GaugeMetricFamily("configsync_client_stale", "", labels=["namespace"])
        yield GaugeMetricFamily("configsync_client_daemon_heartbeat_age_seconds", "",
                                labels=["namespace"])
        yield GaugeMetricFamily("configsync_client_daemon_alive", "", labels=["namespace"])
