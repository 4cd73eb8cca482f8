#!/usr/bin/env bash
# A CPU profile of dnd under load: perf samples the dnd process(es) (the
# cpu-clock software event, so it works where hardware counters are not
# exposed, as on most VMs) with DWARF call graphs while the load tool
# (`dnd bench`, src/load/) drives one workload; then inferno turns the samples into
# a flame graph and this script prints the heaviest functions and where the
# time goes by part of the stack.
#
# usage: bench/profile.sh [--scenario put1|get1|put3|get3] [--seconds N]
#          [--concurrency C] [--out DIR]
#
#   put1  one node, disk engine, write-only load phase (default)
#   get1  one node, disk engine, workload C (reads of 10,000 loaded records)
#   put3  three nodes (N=3, R=2, W=2), write-only, all three profiled
#   get3  three nodes, workload C
#
# Writes DIR/SCENARIO.folded (collapsed stacks), DIR/SCENARIO.svg (flame
# graph) and DIR/SCENARIO.txt (the summary printed), DIR defaulting to
# target/profile. Needs perf (linux-perf) and inferno (`cargo install
# inferno`); installs linux-perf with apt-get when missing. Everything it
# starts is stopped on every way out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SCENARIO=put1
SECS=10
CONC=32
OUT=target/profile
while (($#)); do
  case $1 in
    --scenario) SCENARIO=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $SCENARIO in put1 | get1 | put3 | get3) ;; *) echo "profile: unknown scenario $SCENARIO" >&2; exit 2 ;; esac

log() { printf 'profile: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

while read -r var; do unset "$var"; done < <(compgen -e | grep '^DND_' || true)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnd-profile.XXXXXX")
PIDS=()
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v perf >/dev/null; then
  [[ $(id -u) == 0 ]] || die "perf is missing; install linux-perf"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
command -v inferno-collapse-perf >/dev/null || die "inferno is missing: cargo install inferno"

log "building (release)"
cargo build --release --bin dnd >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; die "build failed"; }
DND=$ROOT/target/release/dnd
# The load tool is the same binary: `dnd bench`.
LOAD=("$DND" bench)

NEXT_PORT=$((20000 + RANDOM % 30000))
port() {
  while :; do
    NEXT_PORT=$((NEXT_PORT + 1))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; then
      PORT=$NEXT_PORT
      return
    fi
  done
}
node() {
  local name=$1 gossip i
  shift
  port
  gossip=$PORT
  port
  "$DND" --port "$gossip" --server-port "$PORT" --data-dir "$WORK/$name" -q "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  HTTP+=("127.0.0.1:$PORT")
  GOSSIPS+=("127.0.0.1:$gossip")
  for ((i = 0; i < 400; i++)); do
    curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/health" && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name exited"; }
    sleep 0.1
  done
  die "$name did not start"
}

HTTP=()
GOSSIPS=()
case $SCENARIO in
  *1) node n1 start ;;
  *3)
    quorum=(--replicas 3 --read-quorum 2 --write-quorum 2)
    node n1 "${quorum[@]}" start
    node n2 "${quorum[@]}" join "${GOSSIPS[0]}"
    node n3 "${quorum[@]}" join "${GOSSIPS[0]}"
    for ((i = 0; i < 600; i++)); do
      ok=1
      for h in "${HTTP[@]}"; do
        n=$(curl -sf --max-time 1 "http://$h/cluster/members" | grep -o '"state":"alive"' | wc -l)
        ((n == 3)) || ok=0
      done
      ((ok)) && break
      sleep 0.1
    done
    ((ok)) || die "the cluster did not converge"
    ;;
esac
targets=$(
  IFS=,
  echo "${HTTP[*]}"
)
pids=$(
  IFS=,
  echo "${PIDS[*]}"
)
case $SCENARIO in
  put*) workload=load ;;
  get*)
    workload=c
    "${LOAD[@]}" --target "$targets" --workload load --operations 10000 --quiet >/dev/null
    ;;
esac

log "$SCENARIO: load for $((SECS + 2)) s, perf on dnd ($pids) for $SECS s"
"${LOAD[@]}" --target "$targets" --workload "$workload" --duration "$((SECS + 2))" \
  --concurrency "$CONC" --threads 2 --server-pids "$pids" --quiet >"$WORK/load.txt" &
load_pid=$!
PIDS+=("$load_pid")
sleep 1
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pids" -o "$WORK/perf.data" \
  -- sleep "$SECS" >"$WORK/perf.log" 2>&1 || { cat "$WORK/perf.log" >&2; die "perf record failed"; }
wait "$load_pid" || die "the load tool failed: $(cat "$WORK/load.txt")"

mkdir -p "$OUT"
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$OUT/$SCENARIO.folded"
inferno-flamegraph --title "dnd $SCENARIO" <"$OUT/$SCENARIO.folded" >"$OUT/$SCENARIO.svg"

# Where the samples went, by the first matching frame from the top of each
# stack (so each sample counts once), then the heaviest leaf functions.
{
  echo "# dnd $SCENARIO: $(grep -E '^\| (load|C) ' "$WORK/load.txt" | head -1)"
  echo
  awk '
    {
      n = $NF; $NF = ""; stack = $0; total += n
      part = "other (user space)"
      if (stack ~ /fjall|lsm_tree|value_log/) part = "storage engine (fjall, lsm-tree)"
      else if (stack ~ /rmp_serde|rmp::|serde/) part = "msgpack encoding (rmp-serde)"
      else if (stack ~ /dnd::peer|ReplicaClient|peer::/) part = "node-to-node channel (peer)"
      else if (stack ~ /dnd::actors::store|dnd::version|dnd::replication/) part = "Store actor, versions, placement"
      else if (stack ~ /dnd::http/) part = "dnd HTTP handlers"
      else if (stack ~ /actix_http|actix_web|h1::/) part = "actix-web / actix-http"
      else if (stack ~ /actix::|actix_rt/) part = "actix actors, mailboxes"
      else if (stack ~ /tokio::/) part = "tokio runtime"
      if (stack ~ /_\[k\]|entry_SYSCALL|do_syscall|__x64_sys/) kernel += n
      share[part] += n
    }
    END {
      printf "%d samples; %.1f%% of them in the kernel (syscalls, network stack, scheduling)\n\n", total, 100 * kernel / total
      printf "| part (first match from the top of the stack) | share |\n|---|---:|\n"
      for (p in share) printf "| %s | %.1f%% |\n", p, 100 * share[p] / total | "sort -t\"|\" -k3 -rn"
    }' "$OUT/$SCENARIO.folded"
  echo
  echo "Heaviest functions (self time):"
  echo
  perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio --percent-limit 1.5 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -25
} | tee "$OUT/$SCENARIO.txt"
log "wrote $OUT/$SCENARIO.svg, $OUT/$SCENARIO.folded and $OUT/$SCENARIO.txt"
