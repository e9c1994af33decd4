#!/usr/bin/env bash
# Builds the browser half of the app into target/site: the wasm32 hydrate bundle (frontend
# crate → wasm-bindgen → wasm-opt), the stylesheet and the public files.
# A manual pipeline instead of cargo-leptos: the same three tools, without cargo-leptos's
# ~30-minute install on a 2-core machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
site=target/site
pkg=$site/pkg
name=dnd_studio
mkdir -p "$pkg"

cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release \
  -Zbuild-std=std,panic_abort
wasm=target/wasm32-unknown-unknown/wasm-release/frontend.wasm
# Only redo the (slow) bindgen + wasm-opt steps when the wasm changed.
if [ ! -f "$pkg/$name.js" ] || [ "$wasm" -nt "$pkg/$name.js" ]; then
  wasm-bindgen --target web --no-typescript --out-dir "$pkg" --out-name "$name" "$wasm"
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$pkg/${name}_bg.wasm" -o "$pkg/${name}_bg.wasm"
  touch "$pkg/$name.js"
fi
cp style/main.css "$pkg/$name.css"
cp -r public/. "$site/"
echo "site built in $site ($(du -h "$pkg/${name}_bg.wasm" | cut -f1) wasm)"
