#!/usr/bin/env bash
# Set-up (idempotent), release build, then serve on the configured address (default 127.0.0.1:3000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
scripts/build.sh
. scripts/env.sh
exec target/release/dnd serve "$@"
