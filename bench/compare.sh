#!/usr/bin/env bash
# dnd side by side with the HTTP ceiling of this machine, etcd and Redis, in
# one run, with one load tool (`dnd bench`, src/load/) and the same settings:
#
#   1. the ceiling: examples/ceiling.rs, an actix-web server that stores nothing
#   2. dnd, one node, --storage memory
#   3. dnd, one node, the default disk engine (--sync periodic); the reference,
#      also measured open-loop at half its peak
#   4. dnd, three nodes, N=3 R=2 W=2, load spread over all three
#      (dnd-3), and the same with the cluster secret on (dnd-3-secret:
#      gossip sealed, replica channel under Noise)
#   5. etcd 3.4, one member, through its v3 JSON gateway
#   6. etcd 3.4, three members, load spread over all three
#   7. Redis through redis-benchmark, for reference (another protocol)
#   8. memory: 1,000,000 keys of 100 B loaded into one dnd node (disk):
#      resident memory and bytes on disk per key
#   9. list: 100,000 keys loaded into dnd on three nodes (N=3 R=2 W=2) and into
#      etcd on three members, then listed whole, pages of 1,000, as often as
#      fits in a phase, every listing checked (the run fails on a wrong one):
#      keys/s, pages/s, page latency
#  10. batch: dnd on one node (disk) and on three nodes: PUTs of new keys one
#      per request, then in batches of 100 (POST /kv/_batch), same clients:
#      PUTs/s of each and their ratio
#  11. watch: 10,000 watches held open on one dnd node (disk), one connection
#      each: the node's resident memory per watch, its CPU over 10 s while
#      they wait, and that a write wakes its watch and no other (the run
#      fails if not); raises `ulimit -n` to do it
#
# Each HTTP system of 1-6 gets the workloads load, C, A and B in that order.
# Then it writes docs/figures/compare.md and the short tables between the
# `compare:begin` and `compare:end` markers of README.md.
#
# usage: bench/compare.sh [--seconds N] [--concurrency C] [--threads T] [--records R]
#          [--value-size B] [--memory-keys K] [--skip-memory] [--list-keys K]
#          [--batch-size B] [--watches W] [--out FILE]
#          [--readme FILE | --no-readme] [--no-install] [--systems LIST]
#
# Defaults: 10 s per phase, 32 clients on 2 threads, 10,000 records, 100 B values,
# 1,000,000 keys for the memory figures, 100,000 keys to list, batches of 100,
# 10,000 watches, docs/figures/compare.md, every system: --systems
# ceiling,dnd-memory,dnd-disk,dnd-3,dnd-3-secret,etcd-1,etcd-3,redis,memory,list,batch,watch
# (a subset leaves the others' figures out). Takes about 10 minutes.
#
# It installs what the systems asked for lack (etcd-server, redis-server,
# redis-tools, curl) with apt-get, as root. Everything it starts listens on
# loopback ports that were free, keeps its data in one temp dir, and is
# stopped, and the dir removed, on every way out (end, error, Ctrl-C,
# SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BEGAN=$(date +%s)

SECS=10
CONC=32
# Two client threads: with one, the client's own loop caps the ceiling server
# (about 85k requests/s here against 110k with two), while dnd's figures
# hardly change; with more, client threads only compete for the two cores.
THREADS=2
RECORDS=10000
VALUE=100
MEMORY_KEYS=1000000
SKIP_MEMORY=0
LIST_KEYS=100000
BATCH=100
WATCHES=10000
OUT=docs/figures/compare.md
README=README.md
INSTALL=1
ALL_SYSTEMS=ceiling,dnd-memory,dnd-disk,dnd-3,dnd-3-secret,etcd-1,etcd-3,redis,memory,list,batch,watch
SYSTEMS=$ALL_SYSTEMS

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf 'compare: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

while (($#)); do
  case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --records) RECORDS=$2; shift 2 ;;
    --value-size) VALUE=$2; shift 2 ;;
    --memory-keys) MEMORY_KEYS=$2; shift 2 ;;
    --skip-memory) SKIP_MEMORY=1; shift ;;
    --list-keys) LIST_KEYS=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --watches) WATCHES=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-readme) README=; shift ;;
    --readme) README=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# ---------------------------------------------------------------------------
# Cleanup on every exit path

# dnd's own settings come from the flags below, not from the caller's shell.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^DND_' || true)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnd-compare.XXXXXX")
PIDS=()
POLICY_CREATED=0

# Stops the processes in PIDS: SIGTERM, then SIGKILL after 10 s.
stop_all() {
  local pid i
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_all
  if ((POLICY_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# What it needs

# Only what the systems asked for need: etcd for its own runs and the
# listing's baseline, Redis for its own.
wants() { [[ ,$SYSTEMS, == *,$1,* ]]; }
need=()
if wants etcd-1 || wants etcd-3 || wants list; then
  command -v etcd >/dev/null || need+=(etcd-server)
fi
if wants redis; then
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-benchmark >/dev/null || need+=(redis-tools)
fi
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  ((INSTALL)) || die "missing ${need[*]} and --no-install given"
  [[ $(id -u) == 0 ]] || die "installing ${need[*]} needs root (or install them first)"
  log "installing ${need[*]}"
  # Keep the packages' own services from starting: this script starts its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    POLICY_CREATED=1
  fi
  apt-get update -qq >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
  if ((POLICY_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; fi
fi
ETCD_VERSION=$( (etcd --version 2>/dev/null || true) | sed -n 's/^etcd Version: //p')
REDIS_VERSION=$( (redis-server --version 2>/dev/null || true) | sed -n 's/.* v=\([^ ]*\).*/\1/p')

log "building dnd (with its load tool, \`dnd bench\`) and the ceiling (release)"
cargo build --release --bin dnd --example ceiling >"$WORK/build.log" 2>&1 ||
  { tail -30 "$WORK/build.log" >&2; die "cargo build failed"; }
# Where cargo built them: CARGO_TARGET_DIR if set, as cargo itself does.
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DND=$TARGET/release/dnd
CEILING=$TARGET/release/examples/ceiling
# The load tool is the same binary.
load() { "$DND" bench "$@"; }

# ---------------------------------------------------------------------------
# Helpers

# A loopback port with nothing listening on TCP, not handed out before in
# this run (dnd also binds the same number on UDP). Below the kernel's
# ephemeral range when there is room: the client ends of earlier runs'
# connections (10,000 of them for the watches) linger there in TIME-WAIT,
# and a port one of them holds cannot be bound.
USED_PORTS=" "
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
PORT_SPAN=$((EPHEMERAL_LOW - 20000 > 4000 ? EPHEMERAL_LOW - 20000 - 2000 : 30000))
NEXT_PORT=$((20000 + RANDOM % PORT_SPAN))
port() {
  while :; do
    NEXT_PORT=$((NEXT_PORT + 1))
    [[ $USED_PORTS == *" $NEXT_PORT "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; then
      USED_PORTS+="$NEXT_PORT "
      PORT=$NEXT_PORT
      return
    fi
  done
}

# start NAME COMMAND...: runs it in the background, output to WORK/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}

# wait_until NAME PID SECONDS COMMAND...: until COMMAND succeeds.
wait_until() {
  local name=$1 pid=$2 secs=$3 i
  shift 3
  for ((i = 0; i < secs * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -15 "$WORK/$name.log" >&2 || true
      die "$name exited before it was ready"
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -15 "$WORK/$name.log" >&2 || true
  die "$name was not ready within $secs s"
}

http_ok() { curl -sf --max-time 1 -o /dev/null "$1"; }
etcd_healthy() { curl -sf --max-time 2 "$1/health" | grep -q '"health":"true"'; }
# Each of the dnd nodes at the given HTTP ports lists all of them alive.
dnd_converged() {
  local p n
  for p in "$@"; do
    n=$(curl -sf --max-time 1 "http://127.0.0.1:$p/cluster/members" | grep -o '"state":"alive"' | wc -l)
    ((n == $#)) || return 1
  done
}

mkdir -p "$WORK/results"
RUN=0
# run_load ID LABEL ROLE DURABILITY PROTOCOL TARGETS WORKLOADS RECORDS [EXTRA LOAD FLAGS...]:
# the load tool against what runs now (the CPU of every process started),
# its report kept; then stops them all.
run_load() {
  local id=$1 label=$2 role=$3 durability=$4 protocol=$5 targets=$6 workloads=$7 records=$8
  shift 8
  RUN=$((RUN + 1))
  local pids
  pids=$(
    IFS=,
    echo "${PIDS[*]}"
  )
  log "measuring $label: $workloads"
  load --protocol "$protocol" --target "$targets" --workload "$workloads" \
    --duration "$SECS" --concurrency "$CONC" --threads "$THREADS" --records "$records" --value-size "$VALUE" \
    --server-pids "$pids" --id "$id" --label "$label" --role "$role" --durability "$durability" \
    --json "$WORK/results/$(printf %02d $RUN)-$id.json" "$@" | tee -a "$WORK/reports.md" ||
    die "the load tool failed on $label ($workloads)"
  echo >>"$WORK/reports.md"
  stop_all
  sleep 1
}

# measure ID LABEL ROLE DURABILITY PROTOCOL TARGETS [EXTRA LOAD FLAGS...]: the
# YCSB workloads.
measure() {
  run_load "$1" "$2" "$3" "$4" "$5" "$6" load,c,a,b "$RECORDS" "${@:7}"
}

# dnd_node NAME [FLAGS...]: one dnd process on fresh ports and data dir.
dnd_node() {
  local name=$1
  shift
  port
  local gossip=$PORT
  port
  DND_HTTP=$PORT
  start "$name" "$DND" --port "$gossip" --server-port "$DND_HTTP" \
    --data-dir "$WORK/$name" -q "$@"
  DND_GOSSIP=$gossip
  wait_until "$name" "$LAST_PID" 40 http_ok "http://127.0.0.1:$DND_HTTP/health"
}

# etcd_cluster NAME MEMBERS: that many members on fresh ports; sets ETCD_URLS.
etcd_cluster() {
  local name=$1 members=$2 i cluster="" client=() peer=()
  for ((i = 1; i <= members; i++)); do
    port
    client+=("$PORT")
    port
    peer+=("$PORT")
    cluster+="${cluster:+,}$name-$i=http://127.0.0.1:${peer[i - 1]}"
  done
  ETCD_URLS=""
  for ((i = 1; i <= members; i++)); do
    start "$name-$i" etcd --name "$name-$i" --data-dir "$WORK/$name-$i" \
      --listen-client-urls "http://127.0.0.1:${client[i - 1]}" \
      --advertise-client-urls "http://127.0.0.1:${client[i - 1]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[i - 1]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peer[i - 1]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "$name" --logger zap --log-level error
    ETCD_URLS+="${ETCD_URLS:+,}127.0.0.1:${client[i - 1]}"
  done
  for ((i = 1; i <= members; i++)); do
    wait_until "$name-$i" "${PIDS[i - 1]}" 60 etcd_healthy "http://127.0.0.1:${client[i - 1]}"
  done
}

# ---------------------------------------------------------------------------
# The systems

DND_PERIODIC="\`--sync periodic\` (default): acknowledged once in the OS's buffers, fsync every 100 ms"
ETCD_FSYNC="fsync of the raft log before a commit is acknowledged (default; concurrent requests share an fsync)"

system_ceiling() {
  port
  start ceiling "$CEILING" --port "$PORT" --body-bytes "$VALUE"
  wait_until ceiling "$LAST_PID" 20 http_ok "http://127.0.0.1:$PORT/kv/ready"
  measure ceiling "ceiling (actix-web, stores nothing)" ceiling "none: nothing is stored" \
    ceiling "127.0.0.1:$PORT"
}

system_dnd_memory() {
  dnd_node dnd-memory --storage memory start
  measure dnd-memory "dnd, 1 node, memory" other "none: \`--storage memory\`" \
    dnd "127.0.0.1:$DND_HTTP"
}

system_dnd_disk() {
  dnd_node dnd-disk start
  measure dnd-disk "dnd, 1 node, disk" reference "$DND_PERIODIC" dnd "127.0.0.1:$DND_HTTP" \
    --half-peak
}

# dnd_cluster_3 NAME [FLAGS...]: three dnd nodes (N=3, R=2, W=2), each with
# FLAGS, converged; sets DND_URLS.
dnd_cluster_3() {
  local name=$1 quorum=(--replicas 3 --read-quorum 2 --write-quorum 2 "${@:2}") seed http=() first
  dnd_node "${name}a" "${quorum[@]}" start
  seed=$DND_GOSSIP
  first=$LAST_PID
  http+=("$DND_HTTP")
  dnd_node "${name}b" "${quorum[@]}" join "127.0.0.1:$seed"
  http+=("$DND_HTTP")
  dnd_node "${name}c" "${quorum[@]}" join "127.0.0.1:$seed"
  http+=("$DND_HTTP")
  wait_until "${name}a" "$first" 60 dnd_converged "${http[@]}"
  DND_URLS="127.0.0.1:${http[0]},127.0.0.1:${http[1]},127.0.0.1:${http[2]}"
}

DND_3_LABEL="dnd, 3 nodes (N=3, R=2, W=2)"
DND_3_DURABILITY="W=2 of 3 replicas hold the write, each $DND_PERIODIC"
ETCD_3_DURABILITY="a majority (2 of 3) fsynced its raft log before the commit is acknowledged (default)"

system_dnd_3() {
  dnd_cluster_3 dnd-3
  measure dnd-3 "$DND_3_LABEL" other "$DND_3_DURABILITY" dnd "$DND_URLS"
}

# The same cluster with the cluster secret: gossip sealed, the replica
# channel under Noise (AES-GCM); the HTTP API stays plain.
system_dnd_3_secret() {
  "$DND" keygen >"$WORK/cluster.secret" || die "dnd keygen failed"
  dnd_cluster_3 dnd-3-secret --cluster-secret-file "$WORK/cluster.secret"
  measure dnd-3-secret "dnd, 3 nodes, cluster secret" other "$DND_3_DURABILITY" dnd "$DND_URLS"
}

system_etcd_1() {
  etcd_cluster etcd-1 1
  measure etcd-1 "etcd $ETCD_VERSION, 1 member" other "$ETCD_FSYNC" etcd "$ETCD_URLS"
}

system_etcd_3() {
  etcd_cluster etcd-3 3
  measure etcd-3 "etcd $ETCD_VERSION, 3 members" other "$ETCD_3_DURABILITY" etcd "$ETCD_URLS"
}

# The listing: the same keys, loaded by the load phase, listed whole.
system_list() {
  local load=(--operations "$LIST_KEYS" --page-size 1000)
  dnd_cluster_3 dnd-list
  run_load list-dnd-3 "$DND_3_LABEL" other "$DND_3_DURABILITY" dnd "$DND_URLS" \
    load,list "$LIST_KEYS" "${load[@]}"
  etcd_cluster etcd-list 3
  run_load list-etcd-3 "etcd $ETCD_VERSION, 3 members" other "$ETCD_3_DURABILITY" etcd "$ETCD_URLS" \
    load,list "$LIST_KEYS" "${load[@]}"
}

# Batches against single PUTs, on one node and on three.
system_batch() {
  dnd_node dnd-batch start
  run_load batch-dnd-disk "dnd, 1 node, disk" other "$DND_PERIODIC" dnd "127.0.0.1:$DND_HTTP" \
    singles,batch "$RECORDS" --batch-size "$BATCH"
  dnd_cluster_3 dnd-batch-3
  run_load batch-dnd-3 "$DND_3_LABEL" other "$DND_3_DURABILITY" dnd "$DND_URLS" \
    singles,batch "$RECORDS" --batch-size "$BATCH"
}

# Open watches on one node: one connection each, in the load tool and in the
# node, so both need that many open files.
system_watch() {
  local want=$((WATCHES + 1000))
  if (($(ulimit -n) < want)); then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  fi
  (($(ulimit -n) >= want)) || die "$WATCHES watches need ulimit -n $want; the limit here is $(ulimit -Hn)"
  dnd_node dnd-watch start
  run_load watch-dnd-disk "dnd, 1 node, disk" other "$DND_PERIODIC" dnd "127.0.0.1:$DND_HTTP" \
    load,watch "$WATCHES" --operations "$WATCHES" --idle 10
}

REDIS_ARGS=()
system_redis() {
  log "measuring Redis $REDIS_VERSION with redis-benchmark"
  port
  local redis_port=$PORT requests=$((SECS * 20000))
  mkdir -p "$WORK/redis"
  start redis redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$WORK/redis" \
    --appendonly yes --appendfsync everysec --save "" --daemonize no --loglevel warning
  wait_until redis "$LAST_PID" 20 redis-cli -p "$redis_port" ping
  redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$CONC" -n "$requests" -d "$VALUE" \
    -r "$RECORDS" -t set,get --csv >"$WORK/redis.csv" 2>"$WORK/redis-benchmark.log" ||
    { cat "$WORK/redis-benchmark.log" >&2; die "redis-benchmark failed"; }
  cat "$WORK/redis.csv" >&2
  stop_all
  REDIS_ARGS=(--redis "$WORK/redis.csv" --redis-note "Redis $REDIS_VERSION (\`appendonly yes\`, \`appendfsync everysec\`: fsync about once a second) measured by \`redis-benchmark -c $CONC -n $requests -d $VALUE -r $RECORDS -t set,get\`: its own client and the RESP protocol, not HTTP, so these figures are a reference, not a row of the tables above.")
}

MEMORY_ARGS=()
system_memory() {
  local pid keys rss_empty rss_loaded rss_peak disk disk_closed apparent apparent_closed settle=5
  dnd_node dnd-mem start
  pid=$LAST_PID
  sleep 1
  rss() { awk -v f="$1:" '$1 == f { print $2 * 1024 }' "/proc/$pid/status"; }
  rss_empty=$(rss VmRSS)
  log "memory: loading $MEMORY_KEYS keys of $VALUE B into one dnd node (disk)"
  load --target "127.0.0.1:$DND_HTTP" --workload load --records "$MEMORY_KEYS" \
    --operations "$MEMORY_KEYS" --concurrency "$CONC" --threads "$THREADS" --value-size "$VALUE" \
    --server-pids "$pid" --id dnd-memory-load --label "dnd, 1 node, disk" \
    --durability "$DND_PERIODIC" --json "$WORK/memory-run.json" | tee -a "$WORK/reports.md" ||
    die "the load tool failed loading $MEMORY_KEYS keys"
  echo >>"$WORK/reports.md"
  sleep "$settle"
  keys=$(grep -m1 '"done":' "$WORK/memory-run.json" | tr -dc 0-9)
  rss_loaded=$(rss VmRSS)
  rss_peak=$(rss VmHWM)
  # Blocks in use (fjall's journal is a sparse file of a fixed apparent size).
  disk=$(du -s -B1 "$WORK/dnd-mem" | cut -f1)
  apparent=$(du -sb "$WORK/dnd-mem" | cut -f1)
  stop_all
  disk_closed=$(du -s -B1 "$WORK/dnd-mem" | cut -f1)
  apparent_closed=$(du -sb "$WORK/dnd-mem" | cut -f1)
  printf '{"keys": %s, "rss_empty_bytes": %s, "rss_bytes": %s, "rss_peak_bytes": %s, "disk_bytes": %s, "disk_bytes_closed": %s, "disk_apparent_bytes": %s, "disk_apparent_bytes_closed": %s, "settle_seconds": %s}\n' \
    "$keys" "$rss_empty" "$rss_loaded" "$rss_peak" "$disk" "$disk_closed" "$apparent" "$apparent_closed" "$settle" >"$WORK/memory.json"
  cat "$WORK/memory.json" >&2
  MEMORY_ARGS=(--memory "$WORK/memory.json" --memory-run "$WORK/memory-run.json")
}

for system in ${SYSTEMS//,/ }; do
  case $system in
    ceiling) system_ceiling ;;
    dnd-memory) system_dnd_memory ;;
    dnd-disk) system_dnd_disk ;;
    dnd-3) system_dnd_3 ;;
    dnd-3-secret) system_dnd_3_secret ;;
    etcd-1) system_etcd_1 ;;
    etcd-3) system_etcd_3 ;;
    redis) system_redis ;;
    memory) ((SKIP_MEMORY)) || system_memory ;;
    list) system_list ;;
    batch) system_batch ;;
    watch) system_watch ;;
    *) die "unknown system $system" ;;
  esac
done

# ---------------------------------------------------------------------------
# The report

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal:/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
MACHINE="a shared $(nproc)-core, $mem GiB machine (${cpu:-unknown CPU}, Linux $(uname -r))"
wall=$(($(date +%s) - BEGAN))
WALL="$((wall / 60)) min $((wall % 60)) s"
mkdir -p "$(dirname "$OUT")"
load summarize --results "$WORK/results" --out "$OUT" --readme "$WORK/readme.md" \
  "${REDIS_ARGS[@]}" "${MEMORY_ARGS[@]}" \
  --machine "$MACHINE" --wall "$WALL" || die "summarizing failed"
{
  printf '\n## Every run in full\n\nWhat the load tool printed for each system, in the order measured.\n\n'
  sed 's/^# load: /### /' "$WORK/reports.md"
} >>"$OUT"
log "wrote $OUT"

if [[ -n $README ]]; then
  if grep -q '<!-- compare:begin -->' "$README" && grep -q '<!-- compare:end -->' "$README"; then
    awk -v table="$WORK/readme.md" '
      /<!-- compare:end -->/ { skip = 0 }
      !skip { print }
      /<!-- compare:begin -->/ { while ((getline line < table) > 0) print line; skip = 1 }
    ' "$README" >"$WORK/README.new"
    cat "$WORK/README.new" >"$README"
    log "updated the table in $README"
  else
    log "no <!-- compare:begin --> / <!-- compare:end --> markers in $README: left as is"
  fi
fi
log "done in $WALL"
