"""The runtime's Prometheus metrics, on a registry of its own (never the process-global one).

Batch sizes are recorded per model step, so a scrape shows whether requests were served together.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class RuntimeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kaito_runtime_requests",
            "Generation requests by outcome (success, validation, overloaded, generation, cancelled).",
            ["outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "kaito_runtime_request_duration_seconds",
            "Time from accepting a request to its last token.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "kaito_runtime_queue_duration_seconds",
            "Time a request waited before joining the running batch.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.input_tokens = Histogram(
            "kaito_runtime_request_input_tokens", "Prompt length in tokens.", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.generated_tokens = Counter(
            "kaito_runtime_generated_tokens", "Tokens generated, all requests together.", registry=r
        )
        self.batch_size = Histogram(
            "kaito_runtime_batch_size",
            "Sequences in the batch at each decode step (above 1 means requests were batched).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.prefill_size = Histogram(
            "kaito_runtime_prefill_size",
            "Requests that joined the running batch together in one prefill step.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "kaito_runtime_step_duration_seconds",
            "Duration of one model step, by phase (prefill or decode).",
            ["phase"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.queue_size = Gauge("kaito_runtime_queue_size", "Requests waiting to join the batch.", registry=r)
        self.current_batch_size = Gauge(
            "kaito_runtime_current_batch_size", "Sequences in the running batch.", registry=r
        )
        self.in_flight = Gauge("kaito_runtime_requests_in_flight", "Requests being served.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
