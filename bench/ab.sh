#!/usr/bin/env bash
# Two dnd server binaries side by side, alternated, under one load tool:
# whether a change made the node faster or slower, with the run-to-run
# spread in view (these machines are shared and noisy).
#
#   usage: bench/ab.sh A_BINARY B_BINARY [ROUNDS] [SECONDS]
#
# Each round runs A, then B (one node, disk engine; then three nodes, N=3
# R=2 W=2, load spread over all three), each with `dnd bench --workload
# load,c` of the B binary: 32 clients on 2 threads, 10,000 records of
# 100 B. It prints one line per run (ops/s of the write-only load phase and
# of workload C), then each side's mean. Default 2 rounds of 5 s phases.
# Build an older server with, for example:
#   git worktree add /tmp/old REV && (cd /tmp/old && cargo build --release --bin dnd)
# Everything it starts listens on loopback, keeps its data in one temp dir,
# and is stopped, and the dir removed, on every way out.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
A=$(realpath "$1")
B=$(realpath "$2")
ROUNDS=${3:-2}
SECS=${4:-5}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    sleep 0.2
  done
  echo "ab: the node on port $1 did not become ready" >&2
  exit 1
}

# run SIDE BINARY NODES: one measurement; prints "SIDE NODES load C".
run() {
  local side=$1 binary=$2 nodes=$3
  local dir="$WORK/$side-$nodes-$RANDOM"
  local targets=() seed=""
  PIDS=()
  for i in $(seq "$nodes"); do
    local gossip http
    gossip=$(free_port)
    http=$(free_port)
    if [[ -z $seed ]]; then
      "$binary" --port "$gossip" --server-port "$http" --data-dir "$dir/$i" -q start &
      PIDS+=($!)
      seed=127.0.0.1:$gossip
    else
      "$binary" --port "$gossip" --server-port "$http" --data-dir "$dir/$i" -q join "$seed" &
      PIDS+=($!)
    fi
    wait_ready "$http"
    targets+=("127.0.0.1:$http")
  done
  local list
  list=$(IFS=,; echo "${targets[*]}")
  "$B" bench --target "$list" --workload load,c --duration "$SECS" --concurrency 32 --threads 2 \
    --records 10000 --value-size 100 --json "$dir/report.json" >"$dir/report.txt" 2>&1
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  python3 - "$dir/report.json" "$side" "$nodes" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ops = {p["workload"].lower(): p["ops_per_sec"] for p in report["phases"]}
print(sys.argv[2], sys.argv[3], round(ops.get("load", 0)), round(ops.get("c", 0)))
PY
}

results="$WORK/results"
for round in $(seq "$ROUNDS"); do
  for nodes in 1 3; do
    run A "$A" "$nodes" | tee -a "$results"
    run B "$B" "$nodes" | tee -a "$results"
  done
done
echo
echo "mean ops/s (A = $A, B = $B):"
awk '{ key = $1 " " $2 " node(s)"; load[key] += $3; c[key] += $4; n[key]++ }
     END { for (k in n) printf "  %s: load %.0f, C %.0f (%d runs)\n", k, load[k] / n[k], c[k] / n[k], n[k] }' "$results" | sort
