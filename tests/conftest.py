"""Shared fixtures: the real control plane (``control_plane``, ``kube_api``, ``namespace``) comes from
the ``sandbox.testing`` plugin, which users of the project can load in their own suites too.

Property tests (hypothesis) run under the ``ci`` profile unless HYPOTHESIS_PROFILE names another:
derandomized, so every run tries the same examples and a failure reproduces; no example database
written into the checkout; no per-example deadline (a wall-clock bound would fail on a loaded
machine, and speed is measured in benchmarks/). ``explore`` tries many more random examples, for
a local hunt after changing a rule."""

import os

from hypothesis import settings

pytest_plugins = ["sandbox.testing"]

settings.register_profile("ci", max_examples=200, derandomize=True, database=None, deadline=None)
settings.register_profile("explore", max_examples=5000, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
