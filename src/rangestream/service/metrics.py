"""Prometheus metrics, one set per app (so tests and several apps in one process do
not share counters). With ``$PROMETHEUS_MULTIPROC_DIR`` set (``--workers N`` sets it
for its workers) every worker writes its values there and ``/metrics`` of any worker
reports the sum over all of them (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from ..proxypool import ProxyStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PROXY_STATES = ("healthy", "cooling", "quarantined")
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's metrics. Names as exported (``rangestream_`` prefix):

    ``active_streams`` (gauge: /stream and /mux responses running),
    ``bytes_out_total`` (body bytes written to clients), ``upstream_requests_total``,
    ``retries_total``, ``refreshes_total`` (from each stream's stats when it ends),
    ``errors_total{kind}`` (failed responses by error class, ``write_timeout``,
    ``internal``), ``ttfb_seconds`` (histogram: request to first body byte),
    ``refusals_total{reason}`` (requests refused before streaming: ``max_streams``,
    ``per_client``, ``unauthorized``, ``forged``, ``expired``, ``host_header``,
    ``cross_site``, ``upstream_not_public``, ``upstream_not_allowed``, ``draining``,
    ``no_proxy``, ``metrics_not_loopback``). With a proxy pool, per proxy (label ``proxy``: ``host:port``, never
    credentials): ``proxy_in_flight`` (downloads holding it), ``proxy_failures`` and
    ``proxy_bot_checks`` (totals), ``proxy_state{state}`` (1 for its state: healthy, cooling,
    quarantined), read from the pool at each scrape.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_streams = Gauge("rangestream_active_streams", "Streams being served now",
                                    registry=r, multiprocess_mode="livesum")
        self.bytes_out = Counter("rangestream_bytes_out", "Body bytes sent to clients", registry=r)
        self.upstream_requests = Counter("rangestream_upstream_requests", "Requests made upstream", registry=r)
        self.retries = Counter("rangestream_retries", "Upstream attempts that were retried", registry=r)
        self.refreshes = Counter("rangestream_refreshes", "Expired upstream URLs refreshed", registry=r)
        self.errors = Counter("rangestream_errors", "Failed responses by kind", ["kind"], registry=r)
        self.ttfb = Histogram("rangestream_ttfb_seconds", "Time from request to first body byte",
                              buckets=TTFB_BUCKETS, registry=r)
        self.refusals = Counter("rangestream_refusals", "Requests refused, by reason", ["reason"], registry=r)
        self.proxy_in_flight = Gauge("rangestream_proxy_in_flight", "Downloads going through each proxy",
                                     ["proxy"], registry=r, multiprocess_mode="livesum")
        self.proxy_failures = Gauge("rangestream_proxy_failures", "Connection failures through each proxy",
                                    ["proxy"], registry=r, multiprocess_mode="livesum")
        self.proxy_bot_checks = Gauge("rangestream_proxy_bot_checks", "Bot checks met through each proxy",
                                      ["proxy"], registry=r, multiprocess_mode="livesum")
        self.proxy_state = Gauge("rangestream_proxy_state", "1 for each proxy's state", ["proxy", "state"],
                                 registry=r, multiprocess_mode="livemax")

    def observe_proxies(self, statuses: Iterable[ProxyStatus]) -> None:
        """The pool's per-proxy state now (labels are ``host:port``: no credentials)."""
        for st in statuses:
            self.proxy_in_flight.labels(st.label).set(st.in_flight)
            self.proxy_failures.labels(st.label).set(st.failures)
            self.proxy_bot_checks.labels(st.label).set(st.bot_checks)
            for name in PROXY_STATES:
                self.proxy_state.labels(st.label, name).set(1 if st.state == name else 0)

    def add_stream_stats(self, stats: object) -> None:
        """Count what one engine stream did (its ``stats``)."""
        self.upstream_requests.inc(getattr(stats, "requests", 0))
        self.retries.inc(getattr(stats, "retries", 0))
        self.refreshes.inc(getattr(stats, "refreshes", 0))

    def exposition(self) -> tuple[bytes, str]:
        """The text format, summed over every worker in multiprocess mode."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call, unused-ignore]  # prometheus_client leaves it unannotated
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
