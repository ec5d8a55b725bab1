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


# --- where the key comes from, and the keys refused --------------------------------------------------
def test_the_key_comes_from_the_flag_else_the_environment() -> None:
    from model_images.runtime.serve import resolve_api_key

    assert resolve_api_key("from-flag", {"KAITO_API_KEY": "from-env"}) == "from-flag"
    assert resolve_api_key(None, {"KAITO_API_KEY": "from-env"}) == "from-env"
    assert resolve_api_key(None, {}) is None  # neither given: an open endpoint, on purpose


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--api-key", ""], {}, "--api-key is empty"),
        (["--api-key", "  "], {}, "--api-key is empty"),
        # What `--api-key $(KAITO_API_KEY)` becomes when the Secret's api-key value is empty.
        (["--api-key", ""], {"KAITO_API_KEY": ""}, "--api-key is empty"),
        ([], {"KAITO_API_KEY": ""}, "KAITO_API_KEY is empty"),
        # The kubelet leaves $(NAME) as it is when the container has no variable NAME.
        (["--api-key", "$(KAITO_API_KEY)"], {}, "variable reference the kubelet did not expand"),
    ],
)
def test_an_empty_key_refuses_to_start_instead_of_serving_an_open_endpoint(
    argv: list[str],
    environ: dict[str, str],
    named: str,
    *,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from model_images.runtime.__main__ import main

    monkeypatch.delenv("KAITO_API_KEY", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # The model directory does not exist: the key is checked first, so the error names the key.
    assert main(["serve", "--model", str(tmp_path / "no-model"), *argv]) == 2
    error = capsys.readouterr().err
    assert named in error, error


async def test_the_server_refuses_an_empty_key(tiny_model_dir: Path) -> None:
    pytest.importorskip("torch")
    from model_images.runtime.loader import load_model
    from model_images.runtime.serve import running
    from model_images.runtime.validation import Limits

    loaded = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="api_key is empty"):
        async with running(loaded, Limits(max_input_tokens=64, max_total_tokens=128), model_id="tiny", api_key=""):
            pass
