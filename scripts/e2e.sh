#!/usr/bin/env bash
# Browser tests: starts the release server on a free loopback port with a throw-away data folder,
# waits for /healthz, runs end2end/*.test.cjs with node's test runner, stops the server.
# Exits non-zero when any browser test fails (or the server does not come up).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
log="$data/server.log"
DND__SERVER__BIND="127.0.0.1:$port" DND__STORAGE__DATA_DIR="$data" target/release/dnd serve >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited during start-up:"; cat "$log"; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "server did not answer /healthz:"; cat "$log"; exit 1; }
status=0
DND_E2E_URL="http://127.0.0.1:$port" DND_E2E_DATA="$data" NODE_PATH="$DND_CACHE/node/node_modules" \
  node --test --test-concurrency=1 end2end/ || status=$?
if [ $status -ne 0 ]; then echo "--- server log ---"; tail -n 50 "$log"; fi
exit $status
