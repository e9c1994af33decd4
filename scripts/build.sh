#!/usr/bin/env bash
# Release build of everything `make run` serves: the `dnd` server binary and the browser bundle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
cargo build --release -p server
scripts/build-site.sh
