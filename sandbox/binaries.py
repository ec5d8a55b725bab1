"""Control-plane binaries: built once from pinned Go modules with the ordinary ``go`` command, cached
by version, and found again on the next run.

Each upstream has a wrapper module under ``sandbox/gomod/`` (go.mod + go.sum committed), because
kubernetes and etcd carry ``replace`` directives that make ``go install pkg@version`` refuse them.
Binaries land in ``<cache>/bin/<component>-<version>/``; a build goes to a temporary folder first and
is renamed into place, so an interrupted build never leaves a half-written cache. ``KAITO_BIN_DIR``
points at a folder of ready binaries instead (nothing is built then).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

K8S_VERSION: Final = "v1.36.3"
ETCD_VERSION: Final = "v3.6.16"
KWOK_VERSION: Final = "v0.8.0"
HELM_VERSION: Final = "v3.21.4"

GOMOD_DIR: Final = Path(__file__).resolve().parent / "gomod"
BIN_DIR_ENV: Final = "KAITO_BIN_DIR"
CACHE_DIR_ENV: Final = "KAITO_CACHE_DIR"
PROGRESS_EVERY_SECONDS: Final = 30.0


def _k8s_ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={K8S_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _helm_ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    return " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
            # Without these helm judges charts against Kubernetes 1.20 (its source default).
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
        ]
    )


@dataclass(frozen=True)
class Component:
    """One ``go build`` invocation: a wrapper module, its packages, and the binaries they produce."""

    name: str
    version: str
    module_dir: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: str
    single_output: str | None = None
    """Output file name when one package is built (``go build -o file``); None builds into a folder."""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


COMPONENTS: Final = (
    Component(
        "etcd",
        ETCD_VERSION,
        "etcd",
        ("go.etcd.io/etcd/server/v3",),
        ("etcd",),
        f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}",
        single_output="etcd",
    ),
    Component(
        "k8s",
        K8S_VERSION,
        "k8s",
        (
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
        ),
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
        _k8s_ldflags(),
    ),
    Component("kwok", KWOK_VERSION, "kwok", ("sigs.k8s.io/kwok/cmd/kwok",), ("kwok",), "-s -w", "kwok"),
    Component("helm", HELM_VERSION, "helm", ("helm.sh/helm/v3/cmd/helm",), ("helm",), _helm_ldflags(), "helm"),
)


class BinaryError(RuntimeError):
    """A binary is missing and cannot be built (no Go toolchain, or the build failed)."""


def cache_root() -> Path:
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaito-py"


@dataclass(frozen=True)
class Binaries:
    """Paths of every control-plane binary."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    helm: Path


def _component_dir(component: Component) -> Path:
    return cache_root() / "bin" / component.key


def _is_built(component: Component) -> bool:
    folder = _component_dir(component)
    return all(os.access(folder / name, os.X_OK) for name in component.binaries)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise builds across processes (two pytest runs, or make sandbox beside make test)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _report_progress(label: str, done: threading.Event, out: TextIO) -> None:
    started = time.monotonic()
    while not done.wait(PROGRESS_EVERY_SECONDS):
        elapsed = int(time.monotonic() - started)
        print(f"  ... still building {label}: {elapsed // 60}m{elapsed % 60:02d}s elapsed", file=out, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "the Go toolchain (`go`) is not on PATH; it is needed once to build the control-plane "
            f"binaries. Install Go >= 1.26, or set {BIN_DIR_ENV} to a folder holding etcd, kube-apiserver, "
            "kube-controller-manager, kube-scheduler, kwok and helm."
        )
    return go


def build(component: Component, out: TextIO = sys.stderr) -> Path:
    """Build one component into the cache (no-op when it is already there); return its folder."""
    target = _component_dir(component)
    with _build_lock():
        if _is_built(component):
            return target
        go = _go()
        label = f"{', '.join(component.binaries)} ({component.name} {component.version})"
        print(f"building {label} from Go modules; a cold build can take many minutes", file=out, flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{component.key}-", dir=target.parent))
        output = staging / component.single_output if component.single_output else staging
        argv = [go, "build", "-trimpath", "-ldflags", component.ldflags, "-o", f"{output}{os.sep}"]
        if component.single_output:
            argv[-1] = str(output)
        argv += component.packages
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
        done = threading.Event()
        ticker = threading.Thread(target=_report_progress, args=(label, done, out), daemon=True)
        started = time.monotonic()
        ticker.start()
        try:
            result = subprocess.run(
                argv,
                cwd=GOMOD_DIR / component.module_dir,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            done.set()
            ticker.join()
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BinaryError(f"building {label} failed:\n{result.stderr[-4000:]}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        elapsed = time.monotonic() - started
        print(f"built {label} in {elapsed:.0f}s -> {target}", file=out, flush=True)
        return target


def ensure_binaries(out: TextIO = sys.stderr) -> Binaries:
    """Every binary, from ``KAITO_BIN_DIR`` when set, else from the cache (building what is missing)."""
    explicit = os.environ.get(BIN_DIR_ENV)
    if explicit:
        folders = {component.name: Path(explicit) for component in COMPONENTS}
        for component in COMPONENTS:
            for name in component.binaries:
                if not os.access(Path(explicit) / name, os.X_OK):
                    raise BinaryError(f"{BIN_DIR_ENV}={explicit} has no executable {name}")
    else:
        folders = {component.name: build(component, out) for component in COMPONENTS}
    return Binaries(
        etcd=folders["etcd"] / "etcd",
        kube_apiserver=folders["k8s"] / "kube-apiserver",
        kube_controller_manager=folders["k8s"] / "kube-controller-manager",
        kube_scheduler=folders["k8s"] / "kube-scheduler",
        kwok=folders["kwok"] / "kwok",
        helm=folders["helm"] / "helm",
    )
