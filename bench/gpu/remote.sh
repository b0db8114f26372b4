#!/usr/bin/env bash
# The GPU check, run on the device machine (no Node, no registry) from what bench/gpu/pack.sh
# packed: unpack Node and the project, build the bundled llama.cpp (CUDA for sm_90 when nvcc is
# there, else a CPU build), write the random model, serve it with engine.library_dir, and
# measure 1 and 32 clients (bench/gpu/load.ts), sampling nvidia-smi during the steady load.
# Everything it measured goes to $OUT (default bench/gpu/out/results): results.jsonl,
# summary.txt, status.json, the server log and the build's log tail.
#   bench/gpu/remote.sh [--cpu] [--model 1b|small] [--clients 1,32] [--requests 1:10,32:4]
#                       [--prompt 128] [--gen 384] [--lib DIR]
# --cpu builds for the CPU even with nvcc present; --lib DIR skips the build and serves from a
# llama.cpp build already made (a CPU rehearsal with scripts/build-llama-lib.sh's folder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pack=$here/out
cpu=0 model=1b clients=1,32 requests=1:10,32:4 prompt=128 gen=384 lib=
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) cpu=1 ;;
    --model) model=$2; shift ;;
    --clients) clients=$2; shift ;;
    --requests) requests=$2; shift ;;
    --prompt) prompt=$2; shift ;;
    --gen) gen=$2; shift ;;
    --lib) lib=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
out=${OUT:-$pack/results}
work=${WORK:-/tmp/moltbot-gpu-bench}
mkdir -p "$out" "$work"
start=$(date +%s)
step() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$out/summary.txt"; }

step "unpacking ($(du -cb "$pack"/*.xz | tail -n1 | cut -f1) bytes packed)"
xz -dc "$pack/node.xz" >"$work/node" && chmod +x "$work/node"
rm -rf "$work/app" && mkdir -p "$work/app" && tar -xJf "$pack/project.tar.xz" -C "$work/app"
node=$work/node
app=$work/app
step "node $("$node" --version)"
# No curl assumed on the machine: Node fetches.
get() { "$node" -e 'fetch(process.argv[1]).then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); }, () => process.exit(1))' "$1"; }

backend=cpu
if [ -n "$lib" ]; then
  libdir=$lib
  step "serving from the llama.cpp build in $libdir (not built here)"
else
  rm -rf "$work/src" && mkdir -p "$work/src" && tar -xJf "$pack/llama-src.tar.xz" -C "$work/src"
  # GGML_NATIVE is refused with GGML_BACKEND_DL: the CPU module is built for AVX2 machines
  # instead (on a GPU it only looks up the input embeddings).
  opts=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_BUILD_RPATH=\$ORIGIN")
  targets=(llama ggml-cpu)
  if [ "$cpu" = 0 ] && command -v nvcc >/dev/null 2>&1; then
    opts+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90)
    targets+=(ggml-cuda)
    backend=cuda
  fi
  step "building llama.cpp (${targets[*]}) on $(nproc) cores"
  if ! { cmake -S "$work/src" -B "$work/build" "${opts[@]}" && cmake --build "$work/build" -j"$(nproc)" --target "${targets[@]}"; } >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log" >"$out/build-log-tail.txt"
    step "build failed: see build-log-tail.txt"
    exit 1
  fi
  tail -n 5 "$work/build.log" >"$out/build-log-tail.txt"
  libdir=$work/build/bin
  step "built: $(ls "$libdir" | tr '\n' ' ')"
fi

step "writing the $model model"
rm -rf "$work/models"
"$node" "$app/dist/bench/gpu/make-model.js" --size "$model" --repo "$work/models" --parallel 32 --context $((prompt + gen + 16)) | tee -a "$out/summary.txt"

port=18080
cat >"$work/moltbot.yaml" <<EOF
server: { host: 127.0.0.1, port: $port }
model_path: $work/models
data_dir: $work/data
engine: { backend: $backend, library_dir: $libdir }
batching: { max_batch_size: 32, kv_cache_tokens: $((32 * (prompt + gen + 16))), speculative: false, cache_ram: 0 }
queue: { max_size: 1024, max_wait_ms: 600000 }
cache: { mode: off }
log: { level: INFO, file: $out/moltbot.log }
EOF
cp "$work/moltbot.yaml" "$out/"
step "serving (backend $backend)"
"$node" "$app/bin/moltbot" deploy --config "$work/moltbot.yaml" >"$work/deploy.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  get "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { tail -n 40 "$work/deploy.out" | tee -a "$out/summary.txt"; exit 1; }
  sleep 0.5
done
grep -h "Backend of\|loaded successfully" "$out/moltbot.log" | tee -a "$out/summary.txt"
get "http://127.0.0.1:$port/admin/status" >"$out/status.json" || true

step "load: clients $clients, prompt $prompt, gen $gen"
"$node" "$app/dist/bench/gpu/load.js" --url "http://127.0.0.1:$port" --clients "$clients" --requests "$requests" \
  --prompt "$prompt" --gen "$gen" --out "$out/results.jsonl" | tee -a "$out/summary.txt"
get "http://127.0.0.1:$port/metrics" | grep -E '^moltbot_worker_(backend_info|device_memory_bytes|offloaded_layers|layers)' >>"$out/summary.txt" || true
kill -TERM $server && wait $server || true
step "done"
