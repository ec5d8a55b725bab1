"""An API key on the runtime: every route but health and metrics needs ``Authorization: Bearer``,
and ``kaito generate --api-key`` sends it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.runtime

KEY = "s3cret-key"
TIMEOUT = aiohttp.ClientTimeout(total=60)


@pytest.fixture
async def protected_url(tiny_model_dir: Path) -> AsyncIterator[str]:
    pytest.importorskip("torch")
    from model_images.runtime.loader import load_model
    from model_images.runtime.serve import running
    from model_images.runtime.validation import Limits

    loaded = load_model(tiny_model_dir, device="cpu")
    async with running(loaded, Limits(max_input_tokens=64, max_total_tokens=128), model_id="tiny", api_key=KEY) as url:
        yield url


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": KEY}, 401),  # the scheme is part of it
        ({"Authorization": f"Bearer {KEY}"}, 200),
    ],
)
async def test_generation_needs_the_key(protected_url: str, headers: dict[str, str], status: int) -> None:
    body = {"inputs": "The weather", "parameters": {"max_new_tokens": 2}}
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for route, payload in (
            ("/generate", body),
            ("/v1/completions", {"prompt": "The weather", "max_tokens": 2}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        ):
            async with session.post(f"{protected_url}{route}", json=payload, headers=headers) as response:
                assert response.status == status, route
                if status == 401:
                    assert await response.json() == {"error": "Unauthorized", "error_type": "unauthorized"}
        async with session.get(f"{protected_url}/info", headers=headers) as response:
            assert response.status == status


async def test_probes_and_scrapers_need_no_key(protected_url: str) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for route in ("/health", "/ping", "/", "/metrics"):
            async with session.get(f"{protected_url}{route}") as response:
                assert response.status == 200, route


async def test_kaito_generate_sends_the_key(protected_url: str) -> None:
    from model_images.generate import chat, generate_text

    printed: list[str] = []
    await generate_text(
        protected_url, "The weather", max_new_tokens=3, stream=False, timeout=60, out=printed.append, api_key=KEY
    )
    await chat(protected_url, "hi", max_new_tokens=3, stream=True, timeout=60, out=printed.append, api_key=KEY)
    assert printed and printed[-1] == "\n"
    from text_generation.errors import UnknownError

    with pytest.raises(UnknownError):  # the text-generation client's name for a 401
        await generate_text(
            protected_url, "The weather", max_new_tokens=3, stream=False, timeout=60, out=printed.append
        )
