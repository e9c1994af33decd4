#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), the formatting check, every Rust test, then the browser tests against a
# started release server. Release profile throughout, so tests and server share one build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
. scripts/env.sh
# A full build needs ~20 GB under target/ (~9 GB with CARGO_INCREMENTAL=0); say so up front rather than let the
# linker fail half an hour in with "No space left on device".
free_gb=$(df -P -B1G "$DND_REPO" | awk 'NR==2 {print $4}')
if [ "${free_gb:-0}" -lt 12 ]; then
  echo "warning: ${free_gb} GB free under $DND_REPO; a full test build needs ~9 GB (CARGO_INCREMENTAL=0) to ~20 GB" >&2
fi
# Formatting first: seconds, and a diff names the file (rustfmt.toml holds the settings).
cargo fmt --all --check
cargo test --release --workspace --exclude frontend
scripts/build.sh
# The README's commands say `dnd …` after `. scripts/env.sh`, from any folder.
(cd / && dnd --version >/dev/null) || { echo "dnd is not on PATH after . scripts/env.sh (see scripts/env.sh)" >&2; exit 1; }
scripts/e2e.sh
