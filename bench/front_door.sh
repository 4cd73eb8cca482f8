#!/usr/bin/env bash
# The price of the front door, in one run on this machine: one node's PUT
# and GET throughput with keep-alive over plain HTTP, over HTTPS, and over
# HTTP with a bearer token, measured by wrk and alternated ROUNDS times so
# drift on a shared machine shows. Each is quoted as a ratio of the plain
# HTTP run of the same round.
#
#   bench/front_door.sh [SECONDS_PER_PHASE]     # default 10; the report goes to stdout
#   ROUNDS=3 CONNECTIONS=32 bench/front_door.sh 15
#
# The node keeps its data in memory, so that what the front door costs is
# as large a share of a request as it can be. With two cores or more, the
# node runs on core 0 with one HTTP worker and wrk on core 1, so that the
# client's own TLS work does not take the node's CPU and the ratio is the
# node's cost per request. It installs wrk and openssl from Debian if they
# are missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:-10}
rounds=${ROUNDS:-2}
connections=${CONNECTIONS:-16}
keys=1000
work=$(mktemp -d)
node_pid=
cleanup() {
  [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || { echo "front_door.sh: needs ${need[*]}; install them or run as root" >&2; exit 1; }
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

node_cpu=() client_cpu=() workers=()
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
  node_cpu=(taskset -c 0) client_cpu=(taskset -c 1) workers=(--http-workers 1)
fi

cargo build --release --quiet
dnd=./target/release/dnd

# A private CA and a server certificate for 127.0.0.1 (P-256, as a
# deployment would likely use).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout "$work/node.key" -out "$work/node.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/ext" -out "$work/node.pem" 2>/dev/null
token=$("$dnd" token new bench --role write --append "$work/tokens.toml" 2>/dev/null)

# Each PUT writes a key of its own (blind writes to one key would pile up
# siblings); the GETs read keys the PUTs wrote. wrk calls request() once
# before the run and never sends what that returns, so p1 is never written.
cat > "$work/put.lua" <<LUA
wrk.method = "PUT"
wrk.body = string.rep("v", 100)
local n = 0
request = function() n = n + 1; return wrk.format(nil, "/kv/p" .. n) end
LUA
cat > "$work/get.lua" <<LUA
request = function() return wrk.format("GET", "/kv/p" .. math.random(2, $keys + 1)) end
LUA

port=6400
# Starts the node in `mode`, runs the PUT and then the GET phase, prints
# "put_rps get_rps". Called with its output redirected, never in a
# subshell, so that the node's pid and the port stay known here.
measure() {
  local mode=$1 scheme=http curl_tls=() flags=() header=()
  case $mode in
    https) scheme=https; curl_tls=(--cacert "$work/ca.pem")
           flags=(--tls-cert "$work/node.pem" --tls-key "$work/node.key") ;;
    token) flags=(--tokens-file "$work/tokens.toml"); header=(-H "Authorization: Bearer $token") ;;
  esac
  port=$((port + 1))
  "${node_cpu[@]}" "$dnd" --storage memory --port "$port" --server-port "$((port + 1000))" -q \
    "${workers[@]}" "${flags[@]}" start &
  node_pid=$!
  local url="$scheme://127.0.0.1:$((port + 1000))"
  for _ in $(seq 1 100); do
    curl -sf "${curl_tls[@]}" -o /dev/null "$url/ready" && break
    sleep 0.1
  done
  local put get
  "${client_cpu[@]}" wrk -t1 -c"$connections" -d"${phase}s" -s "$work/put.lua" "${header[@]}" "$url" > "$work/put.out"
  "${client_cpu[@]}" wrk -t1 -c"$connections" -d"${phase}s" -s "$work/get.lua" "${header[@]}" "$url" > "$work/get.out"
  # Every answer must have been a success, or the figure means nothing.
  if grep -q "Non-2xx\|Socket errors" "$work/put.out" "$work/get.out"; then
    echo "front_door.sh: the $mode run had failed requests:" >&2
    cat "$work/put.out" "$work/get.out" >&2
    exit 1
  fi
  put=$(awk '/^Requests\/sec/ {print $2}' "$work/put.out")
  get=$(awk '/^Requests\/sec/ {print $2}' "$work/get.out")
  kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
  node_pid=
  echo "$put $get"
}

echo "# The price of the front door"
echo
pinning=$( ((${#node_cpu[@]})) && echo "node on core 0 (1 HTTP worker), wrk on core 1" || echo "not pinned")
echo "$(date -u +%Y-%m-%d) · $(nproc) cores · one node, memory storage · $pinning · wrk, 1 thread, $connections keep-alive connections, ${phase} s per phase · \`ROUNDS=$rounds CONNECTIONS=$connections bench/front_door.sh $phase\`"
echo
echo "| round | mode | PUT req/s | GET req/s | PUT vs HTTP | GET vs HTTP |"
echo "|---:|---|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  measure http > "$work/result"
  read -r put_http get_http < "$work/result"
  echo "| $round | HTTP | $put_http | $get_http | 1.00× | 1.00× |"
  for mode in https token; do
    measure "$mode" > "$work/result"
    read -r put get < "$work/result"
    label=$([[ $mode == https ]] && echo "HTTPS" || echo "HTTP + bearer token")
    awk -v r="$round" -v l="$label" -v p="$put" -v g="$get" -v ph="$put_http" -v gh="$get_http" \
      'BEGIN { printf "| %s | %s | %s | %s | %.2f× | %.2f× |\n", r, l, p, g, p / ph, g / gh }'
    awk -v m="$mode" -v p="$put" -v g="$get" -v ph="$put_http" -v gh="$get_http" \
      'BEGIN { printf "%s %.4f %.4f\n", m, p / ph, g / gh }' >> "$work/ratios"
  done
done
echo
# The median of each ratio over the rounds: one round's drift moves it little.
for mode in https token; do
  label=$([[ $mode == https ]] && echo "HTTPS" || echo "HTTP + bearer token")
  for column in 2 3; do
    awk -v m="$mode" -v c="$column" '$1 == m {print $c}' "$work/ratios" | sort -n |
      awk -v l="$label" -v op="$([[ $column == 2 ]] && echo PUT || echo GET)" \
        '{v[NR] = $1} END { med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
          printf "median %s %s: %.2f× of plain HTTP (%d rounds)\n", l, op, med, NR }'
  done
done
