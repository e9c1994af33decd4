#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), the formatting check, every Rust test, then the browser tests against a
# started release server. Release profile throughout, so tests and server share one build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
. scripts/env.sh
# Formatting first: seconds, and a diff names the file (rustfmt.toml holds the settings).
cargo fmt --all --check
cargo test --release --workspace --exclude frontend
scripts/build.sh
# The README's commands say `dnd …` after `. scripts/env.sh`, from any folder.
(cd / && dnd --version >/dev/null) || { echo "dnd is not on PATH after . scripts/env.sh (see scripts/env.sh)" >&2; exit 1; }
scripts/e2e.sh
