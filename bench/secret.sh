#!/usr/bin/env bash
# The price of the cluster secret, in one run on this machine:
# - a 3-node cluster's PUT and GET throughput (closed loop, `cargo bench
#   --bench kv -- --scenario cluster3`) without the secret and with it,
#   alternated twice so drift on a shared machine shows;
# - gossip bytes sent per member per second by an idle 5-node cluster
#   (`dnd dev --nodes 5`), without the secret and with it.
#
#   bench/secret.sh [SECONDS_PER_PHASE]      # default 5; the report goes to stdout
#   ROUNDS=3 bench/secret.sh 10              # more alternations, longer phases
#
# The secret sealing gossip (XChaCha20-Poly1305) and the Noise sessions of
# the node-to-node channel are the only difference between the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:-5}
rounds=${ROUNDS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
dnd=./target/release/dnd
"$dnd" keygen > "$work/secret"
chmod 600 "$work/secret"

# ops/s of cluster3 in the given section of a kv report.
ops() { awk -v section="$2" '$0 ~ "^## " section {on=1; next} /^## /{on=0} on && /^\| cluster3 \|/ {print $4; exit}' "$1"; }

echo "# The price of the cluster secret"
echo
echo "$(date -u +%Y-%m-%d) · $(nproc) cores · ${phase} s per phase · \`ROUNDS=$rounds bench/secret.sh $phase\`"
echo
echo "| run | secret | PUT ops/s | GET ops/s |"
echo "|---:|---|---:|---:|"
declare -A put get
for run in $(seq 1 "$rounds"); do
  for mode in off on; do
    flags=()
    [[ $mode == on ]] && flags=(--node-flags "--cluster-secret-file $work/secret")
    cargo bench --quiet --bench kv -- --scenario cluster3 --seconds "$phase" "${flags[@]}" > "$work/kv.md" 2> "$work/kv.err"
    put[$run$mode]=$(ops "$work/kv.md" "PUT, closed loop")
    get[$run$mode]=$(ops "$work/kv.md" "GET, closed loop")
    echo "| $run | $mode | ${put[$run$mode]} | ${get[$run$mode]} |"
  done
done
echo
for run in $(seq 1 "$rounds"); do
  awk -v r="$run" -v p1="${put[${run}off]}" -v p2="${put[${run}on]}" -v g1="${get[${run}off]}" -v g2="${get[${run}on]}" \
    'BEGIN { printf "run %s with the secret: PUT %.2f×, GET %.2f× of without\n", r, p2 / p1, g2 / g1 }'
done
echo

# Gossip bytes per member per second of an idle cluster, over 30 s after it
# settled.
gossip_rate() {
  local dir=$1; shift
  "$dnd" dev --nodes 5 --storage memory --port 5300 --server-port 6300 --data-dir "$dir" -- "$@" > "$dir.out" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "running" "$dir.out" 2>/dev/null && break; sleep 0.2; done
  sleep 5
  sum() { local total=0; for port in 6300 6301 6302 6303 6304; do
      v=$(curl -s "127.0.0.1:$port/metrics" | awk '$1 == "dnd_gossip_bytes_sent_total" {print $2}')
      total=$((total + v)); done; echo "$total"; }
  local before after
  before=$(sum); sleep 30; after=$(sum)
  kill -INT "$pid"; wait "$pid" || true
  awk -v b="$before" -v a="$after" 'BEGIN { printf "%.1f", (a - b) / 5 / 30 }'
}
plain=$(gossip_rate "$work/plain")
sealed=$(gossip_rate "$work/sealed" --cluster-secret-file "$work/secret")
echo "| gossip, idle 5-node cluster | bytes per member per second |"
echo "|---|---:|"
echo "| without the secret | $plain |"
echo "| with the secret | $sealed |"
awk -v a="$plain" -v b="$sealed" 'BEGIN { printf "\nwith the secret: %.2f× the gossip bytes\n", b / a }'
