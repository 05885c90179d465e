"""A prometheus-client collector for agent processes that already export metrics.

::

    from prometheus_client import REGISTRY
    from configsync.client_metrics import ClientCollector

    REGISTRY.register(ClientCollector(client))      # a Client or an AsyncClient

Two gauges, labelled with the client's namespace, computed at every scrape (nothing runs in
between):

* ``configsync_client_config_age_seconds``: seconds since the client last read the
  namespace's ``state`` from Redis (``ClientStatus.state_age``); it reads it at least every
  ``check_interval`` (30 s by default) while connected, so alert on an age well beyond that.
  No sample before the first read.
* ``configsync_client_stale``: 1 while the client is stale (no state read from Redis yet, or
  disconnected: it serves what it holds), else 0.

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
    """Collects one client's health for a prometheus-client registry (see the module
    docstring). Register one per client; two clients of one namespace in a process need
    registries of their own (their samples would have the same labels)."""

    def __init__(self, client: ClientCore[Any]) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        namespace = self.client.namespace
        age = GaugeMetricFamily(
            "configsync_client_config_age_seconds",
            "Seconds since this configsync client last read the namespace's state from Redis",
            labels=["namespace"])
        seconds = self.client.state_age
        if seconds is not None:
            age.add_metric([namespace], seconds)
        yield age
        stale = GaugeMetricFamily(
            "configsync_client_stale",
            "1 while this configsync client serves what it holds without Redis confirming it "
            "(never read, or disconnected)", labels=["namespace"])
        stale.add_metric([namespace], 1.0 if self.client.stale else 0.0)
        yield stale

    def describe(self) -> Iterator[Metric]:
        # the families without samples: registering needs no scrape of the client
        yield GaugeMetricFamily("configsync_client_config_age_seconds", "", labels=["namespace"])
        yield GaugeMetricFamily("configsync_client_stale", "", labels=["namespace"])
