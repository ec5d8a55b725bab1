"""The pinned versions in sandbox.binaries agree with the committed Go wrapper modules."""

from __future__ import annotations

import re

from sandbox import binaries


def _required_version(module_dir: str, module: str) -> str:
    go_mod = (binaries.GOMOD_DIR / module_dir / "go.mod").read_text()
    match = re.search(rf"^(?:require\s+|\s+){re.escape(module)} (v\S+)", go_mod, re.MULTILINE)
    assert match, f"{module} is not required in {module_dir}/go.mod"
    return match.group(1)


def test_wrapper_modules_pin_the_declared_versions() -> None:
    assert _required_version("k8s", "k8s.io/kubernetes") == binaries.K8S_VERSION
    assert _required_version("etcd", "go.etcd.io/etcd/server/v3") == binaries.ETCD_VERSION
    assert _required_version("kwok", "sigs.k8s.io/kwok") == binaries.KWOK_VERSION
    assert _required_version("helm", "helm.sh/helm/v3") == binaries.HELM_VERSION


def test_every_kubernetes_staging_module_is_replaced_at_the_matching_version() -> None:
    go_mod = (binaries.GOMOD_DIR / "k8s" / "go.mod").read_text()
    staging = binaries.K8S_VERSION.replace("v1.", "v0.", 1)
    replaces = re.findall(r"^replace (k8s\.io/\S+) => \1 (v\S+)$", go_mod, re.MULTILINE)
    assert len(replaces) >= 29
    assert {version for _, version in replaces} == {staging}


def test_kaito_bin_dir_must_hold_every_binary(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(binaries.BIN_DIR_ENV, str(tmp_path))
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    try:
        binaries.ensure_binaries()
    except binaries.BinaryError as error:
        assert "kube-apiserver" in str(error)
    else:
        raise AssertionError("a folder without kube-apiserver was accepted")
