"""A watch stream that breaks off mid-line ends as a retryable ApiError, never as a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito_operator.runtime import NODE, ApiError, FakeClock, KubeClient, RuntimeMetrics


class Response:
    status = 200

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines
        self.closed = False

    @property
    def content(self) -> AsyncIterator[bytes]:
        async def lines() -> AsyncIterator[bytes]:
            for line in self._lines:
                yield line

        return lines()

    def close(self) -> None:
        self.closed = True


class Api:
    def __init__(self, response: Response) -> None:
        self.response = response

    async def call_api(self, *args: Any, **kwargs: Any) -> Response:
        return self.response


async def test_a_truncated_event_is_a_transient_api_error() -> None:
    response = Response([b'{"type":"ADDED","object":{"metadata":{"name":"n1"}}}\n', b'{"type":"MODIFIED","obj'])
    client = KubeClient(Api(response), clock=FakeClock(), metrics=RuntimeMetrics(), qps=0)
    seen = []
    with pytest.raises(ApiError) as raised:
        async for event in client.watch(NODE, resource_version="1", timeout_seconds=10):
            seen.append(event["object"]["metadata"]["name"])
    assert seen == ["n1"]
    assert raised.value.transient
    assert response.closed
