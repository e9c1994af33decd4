# Build/run environment for DnD Studio. Source it: `. scripts/env.sh`.
# Everything heavy lives in a cache outside the repository so clean clones and CI reuse it.
export DND_CACHE="${DND_STUDIO_CACHE:-$HOME/.cache/dnd-studio}"

# libtorch (CPU-only view of the PyPI torch wheel) for the `tch` crate; see scripts/setup.sh.
export LIBTORCH="$DND_CACHE/libtorch/view"
export LIBTORCH_LIB="$DND_CACHE/libtorch/view"
export LIBTORCH_INCLUDE="$DND_CACHE/libtorch/wheel/torch"

# Debian's rustc-web drives the whole workspace (it can build std for wasm32); RUSTC_BOOTSTRAP
# enables -Zbuild-std for the front end. Same flags for every build so nothing rebuilds twice.
export RUSTC=/usr/bin/rustc
export RUSTC_BOOTSTRAP=1

# Pinned tools (wasm-bindgen-cli) and npm tools (wasm-opt from binaryen, playwright-core), and
# the `dnd` command as the README writes it: the release binary `make run` / scripts/build.sh build.
DND_REPO="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export PATH="$DND_REPO/target/release:$DND_CACHE/tools/bin:$PATH"

# Embedded-default assets (weights, probing images) prepared by scripts/fetch_assets.py.
export DND_ASSETS="${DND_ASSETS:-$DND_CACHE/assets}"

# libtorch's OpenMP workers otherwise spin between parallel regions and starve the in-process
# LLM's threads (the `dnd` binary sets this itself; tests and benches get it from here).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
