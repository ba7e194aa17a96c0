#!/usr/bin/env bash
# Debian 12 CI container: the project's packages (.ci/packages), what a bare
# container lacks (curl, jq, a C toolchain), and the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl jq build-essential \
    $(grep -v '^#' .ci/packages)
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0 -c rustfmt -c clippy
fi
