"""The kaito-py application: the ``kaito`` command and the operator's composition root.

This package sits on top of every other one and is the only place that wires them together: the
Workspace controller (``kaito_operator.workspace``), the GPU provisioner (``gpu_provisioner``), the
model images and runtime (``model_images``) and the sandbox (``sandbox``), over the controller
runtime and the API types at the bottom. ``pyproject.toml`` declares these layers and
``lint-imports`` (part of ``make test``) keeps every import pointing down.
"""
