"""Prometheus metrics of the runtime, registered in a registry the caller owns.

One ``RuntimeMetrics`` per process (or per test), built on its own ``CollectorRegistry`` so tests
and benchmarks can read exact numbers without the global default registry's cross-talk.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "kaito_reconcile_total",
            "Reconciles finished, by controller and result (success, requeue, error, permanent_error).",
            ["controller", "result"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kaito_reconcile_errors_total",
            "Reconciles that failed, by controller and error kind (transient, permanent, unexpected).",
            ["controller", "kind"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "kaito_reconcile_duration_seconds",
            "Time spent in one reconcile.",
            ["controller"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kaito_workqueue_depth",
            "Keys waiting in a controller's work queue (ready now, not delayed).",
            ["controller"],
            registry=self.registry,
        )
        self.queue_retries = Counter(
            "kaito_workqueue_retries_total",
            "Keys put back with backoff after a failed reconcile.",
            ["controller"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "kaito_api_requests_total",
            "Requests to the Kubernetes API server, by verb, API group, resource, subresource and HTTP status "
            "code (verb is the client's: apply is a server-side apply, authorized as patch).",
            ["verb", "group", "resource", "subresource", "code"],
            registry=self.registry,
        )
        self.watch_restarts = Counter(
            "kaito_informer_relists_total",
            "Full re-lists of an informer, by resource and cause (start, gone, error).",
            ["resource", "cause"],
            registry=self.registry,
        )

    def api_requests_by_verb(self) -> dict[str, int]:
        """Total API requests per verb, summed over resources and codes (for benchmarks and tests)."""
        totals: dict[str, int] = {}
        for family in self.api_requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    verb = sample.labels["verb"]
                    totals[verb] = totals.get(verb, 0) + int(sample.value)
        return totals

    def api_requests_by_resource(self) -> dict[tuple[str, str, str, str], int]:
        """Total API requests per (verb, group, resource, subresource), summed over codes: what the
        process asked the API server for, to compare with the RBAC it is granted."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for family in self.api_requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    key = (labels["verb"], labels["group"], labels["resource"], labels["subresource"])
                    totals[key] = totals.get(key, 0) + int(sample.value)
        return totals
