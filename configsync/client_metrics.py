"""A prometheus-client collector for agent processes that already export metrics.

::

    from prometheus_client import REGISTRY
    from configsync.client_metrics import ClientCollector

    REGISTRY.register(ClientCollector(client))      # a Client or an AsyncClient
    REGISTRY.register(ClientCollector(prod, dev))   # several clients: one collector for all

Two gauges, labelled with each client's namespace, computed at every scrape (nothing runs in
between); clients of several namespaces share one collector (two collectors in one registry
would declare the same metric twice, which prometheus-client refuses):

* ``configsync_client_config_age_seconds``: seconds since the client last read the
  namespace's ``state`` from Redis (``ClientStatus.state_age``); it reads it at least every
  ``check_interval`` (30 s by default) while connected, so alert on an age well beyond that.
  No sample before the first read.
* ``configsync_client_stale``: 1 while the client is stale (no state read from Redis yet, or
  disconnected: it serves what it holds) or stopped, else 0.

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
        for client in self.clients:
            seconds = client.state_age
            if seconds is not None:
                age.add_metric([client.namespace], seconds)
            stale.add_metric([client.namespace], 1.0 if client.stale or client.closed else 0.0)
        yield age
        yield stale

    def describe(self) -> Iterator[Metric]:
        # the families without samples: registering needs no scrape of the clients
        yield GaugeMetricFamily("configsync_client_config_age_seconds", "", labels=["namespace"])
        yield GaugeMetricFamily("configsync_client_stale", "", labels=["namespace"])
