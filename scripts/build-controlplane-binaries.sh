#!/usr/bin/env bash
# Build (or find in the cache) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
# and helm from the pinned Go modules in sandbox/gomod/. Same as `make binaries`.
set -euo pipefail
cd "$(dirname "$0")/.."
make binaries
