"""Shared fixtures: the real control plane (``control_plane``, ``kube_api``, ``namespace``) comes from
the ``sandbox.testing`` plugin, which users of the project can load in their own suites too."""

pytest_plugins = ["sandbox.testing"]
