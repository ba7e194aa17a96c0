#!/usr/bin/env bash
# Debian 12 CI container: the project's packages (.ci/packages), what a bare
# container lacks (curl, jq, a C toolchain), and the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# One package a line; what follows a '#' is a comment (as the runner's setup
# reads it).
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' .ci/packages)
apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl jq build-essential \
    "${packages[@]}"
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0 -c rustfmt -c clippy
fi
