#!/usr/bin/env bash
# Debian 12 CI container: the packages .ci/run installs, plus what a bare
# container lacks (curl, jq) and the Rust toolchain the project builds with.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl jq git build-essential
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0 -c rustfmt -c clippy
fi
