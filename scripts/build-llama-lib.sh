#!/usr/bin/env bash
# Builds libllama (and libggml, libggml-base) from the exact llama.cpp source node-llama-cpp
# bundles, with GGML_BACKEND_DL, into a cache folder: what an operator's own build for
# `engine.library_dir` looks like, without a GPU. Only the `llama` target is built; the CPU
# kernels are the shipped libggml-cpu-*.so variants copied beside it (GGML_CPU=OFF: building
# every CPU variant ourselves would take far longer on 2 cores and test nothing more about
# library_dir). Pass extra cmake options after DEST, e.g. -DGGML_CUDA=ON.
# usage (from the project root, after npm ci): scripts/build-llama-lib.sh [DEST [cmake options...]]
#   DEST defaults to $HOME/.cache/moltbot/llama-lib/<tag>-cpu; prints the library folder last.
#   Cached: a second run with a complete folder returns at once.
set -euo pipefail
root=$PWD
bundle=$root/node_modules/node-llama-cpp/llama/gitRelease.bundle
[ -f "$bundle" ] || { echo "no $bundle: run this from the project root after npm ci" >&2; exit 1; }
tag=$(node -p 'require("./node_modules/node-llama-cpp/llama/llama.cpp.info.json").tag')
out=${1:-$HOME/.cache/moltbot/llama-lib/$tag-cpu}
shift || true
cpu_dir=$(dirname "$(ls "$root"/node_modules/@node-llama-cpp/linux-x64/bins/*/libggml-cpu-*.so 2>/dev/null | head -n1)")
[ -d "$cpu_dir" ] && [ "$cpu_dir" != . ] || { echo "no shipped libggml-cpu-*.so under node_modules/@node-llama-cpp/linux-x64" >&2; exit 1; }
if [ -f "$out/lib/libllama.so" ] && [ -f "$out/lib/.complete" ]; then echo "$out/lib"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake is needed to build libllama (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
[ -d src ] || git -c advice.detachedHead=false clone -q "$bundle" src
cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON \
  -DGGML_BACKEND_DL=ON -DGGML_CPU=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF "$@" >/dev/null
targets=llama
# A GPU backend built with GGML_BACKEND_DL is a module of its own, not a dependency of llama.
for opt in "$@"; do
  case $opt in
    -DGGML_CUDA=ON) targets="$targets ggml-cuda" ;;
    -DGGML_VULKAN=ON) targets="$targets ggml-vulkan" ;;
  esac
done
# shellcheck disable=SC2086
cmake --build build -j"$(nproc)" --target $targets >/dev/null
rm -rf lib && mkdir lib
cp -P build/bin/lib*.so* lib/
cp "$cpu_dir"/libggml-cpu-*.so lib/
touch lib/.complete
echo "$out/lib"
