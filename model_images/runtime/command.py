"""The container command that runs this runtime in a pod; imported by the operator's renderer.

Import-light on purpose (no torch): the operator process renders workloads without the runtime's
dependencies installed.
"""

from __future__ import annotations

from typing import Final

RUNTIME_DIR: Final = "/opt/kaito-runtime"
"""Where the model images install this runtime: a virtualenv of its own beside TGI's environment."""
RUNTIME_PYTHON: Final = f"{RUNTIME_DIR}/bin/python"

RUNTIME_ANNOTATION_VALUE: Final = "transformers"
"""``kaito.sh/runtime: transformers`` on a Workspace selects this runtime instead of TGI."""


def runtime_container_command(model_dir: str, port: int, max_input_tokens: int, max_total_tokens: int) -> list[str]:
    """The ``command`` of the inference container when a Workspace selects the transformers runtime.

    Contract with the renderer:

    - The image has this runtime in the virtualenv ``RUNTIME_DIR`` (the preset images built by
      ``kaito images build`` do; model_images/images/Dockerfile.template), so the command runs
      ``RUNTIME_PYTHON``, never the image's own ``python``.
    - ``model_dir`` is a directory inside the container holding a Hugging Face causal LM
      (``config.json``, safetensors weights, ``tokenizer.json``); for preset images it is
      ``catalog.WEIGHTS_PATH``. Nothing is downloaded.
    - The server listens on ``0.0.0.0:port`` and serves TGI's HTTP API there, so the Service,
      probes and clients are the same as for TGI: ``GET /health`` is 200 once the model is loaded
      and the engine runs (use it for readiness and liveness; the port is closed while loading,
      so give the startup probe the preset's ``startup_seconds``), ``GET /metrics`` is Prometheus
      text on the same port.
    - ``max_input_tokens`` < ``max_total_tokens`` <= the model's ``max_position_embeddings``;
      the process exits with status 2 and a message on stderr otherwise.
    - On SIGTERM it stops accepting connections, lets in-flight requests finish for up to 90 s,
      and exits 0; set ``terminationGracePeriodSeconds`` above that.
    - It uses the GPU when CUDA is visible (bf16), else the CPU (float32).
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    if not 0 < max_input_tokens < max_total_tokens:
        raise ValueError(f"need 0 < max_input_tokens < max_total_tokens, got {max_input_tokens} and {max_total_tokens}")
    return [
        RUNTIME_PYTHON,
        "-m",
        "model_images.runtime",
        "serve",
        "--model",
        model_dir,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--max-input-tokens",
        str(max_input_tokens),
        "--max-total-tokens",
        str(max_total_tokens),
    ]
