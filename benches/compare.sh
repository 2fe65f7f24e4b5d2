#!/usr/bin/env bash
# Compares bearerd with nginx as a static-header proxy on this machine (loopback only).
#
# Needs: nginx, wrk, curl, cargo (install with `apt-get install nginx wrk curl`; this script
# installs nothing). Builds bearerd --release, starts a backend nginx (small-JSON upstream and
# a token endpoint), nginx as a proxy (one worker, static Authorization, upstream keep-alive)
# and bearerd (client_credentials, same upstream), then:
#   1. alternates wrk runs (1 thread, 32 connections, --latency) nginx/bearerd for PAIRS pairs
#      and prints req/s, p50, p99 per run and the medians of the per-pair ratios;
#   2. overhead at concurrency 1: p50 via bearerd minus p50 direct to the upstream;
#   3. refresh under load: the same pairs with a token that bearerd refreshes every ~2 s;
#   4. RSS of bearerd idle (one connection) and while 1,000 connections are open.
#
# Environment: PAIRS (default 5), REFRESH_PAIRS (3), DURATION (5s), CONNS (32), BUILD (1: run
# cargo build --release), BEARERD (path to a bearerd binary; skips the build), WORKER_THREADS
# (bearerd's [runtime] worker_threads; default: its own default), ONLY_PAIRS=1 (skip the c=1,
# RSS and refresh parts).
# Everything runs under a mktemp directory and is stopped on exit.
set -euo pipefail

PAIRS=${PAIRS:-5}
REFRESH_PAIRS=${REFRESH_PAIRS:-3}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-32}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

missing=()
for tool in nginx wrk curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ -z "${BEARERD:-}" ] && ! command -v cargo >/dev/null 2>&1; then missing+=(cargo); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare.sh needs: ${missing[*]}" >&2
  echo "install them first, e.g.: apt-get install nginx wrk curl (this script installs nothing)" >&2
  exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bearerd-compare.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

if [ -z "${BEARERD:-}" ]; then
  if [ "${BUILD:-1}" = 1 ]; then
    echo "building bearerd --release ..." >&2
    (cd "$ROOT" && cargo build --release --quiet)
  fi
  BEARERD="$ROOT/target/release/bearerd"
fi

# A free loopback port: random, checked against the listening sockets.
used_ports=" "
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    case "$used_ports" in *" $port "*) continue ;; esac
    if ! ss -Htln "sport = :$port" | grep -q .; then
      used_ports="$used_ports$port "
      echo "$port"
      return
    fi
  done
}

wait_http() { # URL: until it answers (10 s at most)
  for _ in $(seq 100); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "compare.sh: $1 did not come up" >&2
  exit 1
}

UP=$(free_port) NGX=$(free_port) BRD=$(free_port) ADM=$(free_port)
TOKEN='{"access_token":"bench-token-0123456789abcdef","token_type":"Bearer","expires_in":EXP}'

# The backend: the upstream (small JSON; keep-alive for as long as the run) and the token
# endpoints (/token lives an hour, /token-short 4 s so bearerd refreshes every ~2 s).
mkdir -p "$WORK/backend" "$WORK/proxy" "$WORK/store"
cat >"$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/json;
  client_body_temp_path $WORK/backend; proxy_temp_path $WORK/backend;
  fastcgi_temp_path $WORK/backend; uwsgi_temp_path $WORK/backend; scgi_temp_path $WORK/backend;
  server {
    listen 127.0.0.1:$UP reuseport;
    location / { return 200 '{"id":42,"name":"widget","price":9.5,"tags":["a","b"]}'; }
    location = /token {
      access_log $WORK/backend/token.log;
      return 200 '${TOKEN/EXP/3600}';
    }
    location = /token-short {
      access_log $WORK/backend/token-short.log;
      return 200 '${TOKEN/EXP/4}';
    }
  }
}
EOF

# nginx as the static-header proxy the issue compares with: one worker, upstream keep-alive.
cat >"$WORK/proxy/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/proxy; proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/proxy; uwsgi_temp_path $WORK/proxy; scgi_temp_path $WORK/proxy;
  upstream api { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer bench-token-0123456789abcdef";
    }
  }
}
EOF

"$NGINX" -c "$WORK/backend/nginx.conf" -g 'daemon off;' 2>>"$WORK/backend/stderr" &
PIDS+=($!)
"$NGINX" -c "$WORK/proxy/nginx.conf" -g 'daemon off;' 2>>"$WORK/proxy/stderr" &
PIDS+=($!)
NGINX_PID=$!

BEARERD_PID=
start_bearerd() { # TOKEN_PATH
  cat >"$WORK/bearerd.toml" <<EOF
[admin]
listen = "127.0.0.1:$ADM"
public_url = "http://127.0.0.1:$ADM"
[store]
kind = "file"
dir = "$WORK/store"
[[connection]]
name = "bench"
provider = "oauth2"
listen = "127.0.0.1:$BRD"
upstream = "http://127.0.0.1:$UP"
grant = "client_credentials"
token_url = "http://127.0.0.1:$UP$1"
client_id = "bench"
client_secret = "bench-secret"
EOF
  if [ -n "${WORKER_THREADS:-}" ]; then
    printf '[runtime]\nworker_threads = %s\n' "$WORKER_THREADS" >>"$WORK/bearerd.toml"
  fi
  BEARERD_LOG=${BEARERD_LOG:-warn} "$BEARERD" run --config "$WORK/bearerd.toml" 2>>"$WORK/bearerd.log" &
  BEARERD_PID=$!
  PIDS+=("$BEARERD_PID")
  wait_http "http://127.0.0.1:$ADM/readyz"
}
stop_bearerd() {
  kill "$BEARERD_PID" 2>/dev/null || true
  wait "$BEARERD_PID" 2>/dev/null || true
}

URL_PATH=/v1/items/42?fields=all
wait_http "http://127.0.0.1:$UP/"
wait_http "http://127.0.0.1:$NGX$URL_PATH"
start_bearerd /token
wait_http "http://127.0.0.1:$BRD$URL_PATH"

# wrk's latency figures in microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } else print v }'; }
# RESULT: "req/s p50_us p99_us errors" of one wrk run.
run_wrk() { # URL CONNECTIONS DURATION
  local out rps p50 p99 errors
  out=$(wrk -t1 -c"$2" -d"$3" --latency "$1")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out" | to_us)
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out" | to_us)
  errors=$(awk '/Non-2xx|Socket errors/ { n++ } END { print n+0 }' <<<"$out")
  RESULT="$rps $p50 $p99 $errors"
  if [ "$errors" != 0 ]; then echo "$out" >&2; fi
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

pairs() { # LABEL N: alternating runs; prints the table and sets RPS_RATIO, P99_RATIO
  local label=$1 n=$2 i nginx bearerd
  local ratios=() p99s=()
  printf '\n%s: wrk -t1 -c%s -d%s --latency, alternating\n' "$label" "$CONNS" "$DURATION"
  printf '%-5s %-8s %10s %9s %9s %7s\n' pair proxy req/s p50_us p99_us errors
  for i in $(seq "$n"); do
    run_wrk "http://127.0.0.1:$NGX$URL_PATH" "$CONNS" "$DURATION"
    nginx=$RESULT
    printf '%-5s %-8s %10s %9s %9s %7s\n' "$i" nginx $nginx
    run_wrk "http://127.0.0.1:$BRD$URL_PATH" "$CONNS" "$DURATION"
    bearerd=$RESULT
    printf '%-5s %-8s %10s %9s %9s %7s\n' "$i" bearerd $bearerd
    ratios+=("$(awk -v a="$bearerd" -v b="$nginx" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f", x[1] / y[1] }')")
    p99s+=("$(awk -v a="$bearerd" -v b="$nginx" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f", x[3] / y[3] }')")
  done
  RPS_RATIO=$(printf '%s\n' "${ratios[@]}" | median)
  P99_RATIO=$(printf '%s\n' "${p99s[@]}" | median)
  printf 'per-pair throughput ratios (bearerd/nginx): %s -> median %s\n' "${ratios[*]}" "$RPS_RATIO"
  printf 'per-pair p99 ratios (bearerd/nginx):        %s -> median %s\n' "${p99s[*]}" "$P99_RATIO"
}

rss_kib() { ps -o rss= -p "$BEARERD_PID" | tr -d ' '; }

echo "machine: $(nproc) cores; $(uptime | sed 's/.*load/load/')"
echo "bearerd: $BEARERD (worker_threads: ${WORKER_THREADS:-default, one per core}); nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //') (1 worker)"
for _ in 1 2; do run_wrk "http://127.0.0.1:$BRD$URL_PATH" "$CONNS" 1s; run_wrk "http://127.0.0.1:$NGX$URL_PATH" "$CONNS" 1s; done

# CPU per request of the proxy process alone (task-clock, and instructions where the CPU
# exposes counters), when perf works here: less noisy than req/s on a shared machine.
cost() { # LABEL PID URL
  local out requests
  perf stat -x, -e instructions,task-clock -p "$2" -o "$WORK/perf.txt" -- sleep 5 &
  local perf_pid=$!
  out=$(wrk -t1 -c"$CONNS" -d4s "$3")
  wait "$perf_pid" || true
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  awk -F, -v n="$requests" -v label="$1" '
    $3 == "instructions" || $3 ~ /^instructions/ { i = $1 }
    $3 ~ /^task-clock/ { t = $1 }
    END {
      printf "%-8s %10d requests %7.2f cpu-us/request", label, n, t * 1000 / n
      if (i ~ /^[0-9]+$/) printf " %9.0f instructions/request", i / n
      printf "\n"
    }
  ' "$WORK/perf.txt"
}
if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null 2>&1 && perf stat -e task-clock true >/dev/null 2>&1; then
  printf '\nCPU per request (perf stat on the proxy process, wrk -c%s -d4s)\n' "$CONNS"
  cost nginx "$(pgrep -P "$NGINX_PID" | head -n1)" "http://127.0.0.1:$NGX$URL_PATH"
  cost bearerd "$BEARERD_PID" "http://127.0.0.1:$BRD$URL_PATH"
fi

pairs "steady token" "$PAIRS"
STEADY_RPS=$RPS_RATIO STEADY_P99=$P99_RATIO
[ "${ONLY_PAIRS:-0}" = 1 ] && exit 0

printf '\noverhead at concurrency 1: wrk -t1 -c1 -d%s --latency\n' "$DURATION"
run_wrk "http://127.0.0.1:$UP$URL_PATH" 1 "$DURATION"; direct=$RESULT
run_wrk "http://127.0.0.1:$BRD$URL_PATH" 1 "$DURATION"; via=$RESULT
run_wrk "http://127.0.0.1:$NGX$URL_PATH" 1 "$DURATION"; vianginx=$RESULT
printf '%-8s %10s %9s %9s\n' target req/s p50_us p99_us
printf '%-8s %10s %9s %9s\n' direct ${direct% *} && printf '%-8s %10s %9s %9s\n' bearerd ${via% *} && printf '%-8s %10s %9s %9s\n' nginx ${vianginx% *}
OVERHEAD=$(awk -v a="$via" -v b="$direct" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.1f", x[2] - y[2] }')
OVERHEAD_NGINX=$(awk -v a="$vianginx" -v b="$direct" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.1f", x[2] - y[2] }')
echo "added p50: bearerd ${OVERHEAD} us, nginx ${OVERHEAD_NGINX} us"

# RSS: idle after one request, then with 1,000 connections open (sampled during the run).
stop_bearerd
start_bearerd /token
curl -fs -o /dev/null "http://127.0.0.1:$BRD$URL_PATH"
sleep 1
RSS_IDLE=$(rss_kib)
wrk -t1 -c1000 -d4s "http://127.0.0.1:$BRD$URL_PATH" >"$WORK/wrk1000.txt" 2>&1 &
WRK1000=$!
PIDS+=("$WRK1000")
RSS_1000=0
open=0
for _ in $(seq 30); do
  sleep 0.1
  r=$(rss_kib)
  [ "$r" -gt "$RSS_1000" ] && RSS_1000=$r
  o=$(ss -Htn state established "sport = :$BRD" | wc -l)
  [ "$o" -gt "$open" ] && open=$o
done
wait "$WRK1000" || true
sleep 1
RSS_AFTER=$(rss_kib)
printf '\nRSS: idle %s KiB; %s KiB peak while 1000 connect (at most %s seen open); %s KiB idle after\n' \
  "$RSS_IDLE" "$RSS_1000" "$open" "$RSS_AFTER"

# Refresh under load: a 4 s token, refreshed ~2 s after it is issued.
stop_bearerd
: >"$WORK/backend/token-short.log"
start_bearerd /token-short
wait_http "http://127.0.0.1:$BRD$URL_PATH"
pairs "token refreshed every ~2 s" "$REFRESH_PAIRS"
REFRESHES=$(wc -l <"$WORK/backend/token-short.log")
REFRESH_RPS=$RPS_RATIO REFRESH_P99=$P99_RATIO
echo "token requests during the refresh runs: $REFRESHES"

printf '\nsummary\n'
printf 'throughput ratio (median bearerd/nginx): %s steady, %s refreshing (change %s%%)\n' "$STEADY_RPS" "$REFRESH_RPS" \
  "$(awk -v a="$REFRESH_RPS" -v b="$STEADY_RPS" 'BEGIN { printf "%+.1f", (a / b - 1) * 100 }')"
printf 'p99 ratio (median bearerd/nginx):        %s steady, %s refreshing (change %s%%)\n' "$STEADY_P99" "$REFRESH_P99" \
  "$(awk -v a="$REFRESH_P99" -v b="$STEADY_P99" 'BEGIN { printf "%+.1f", (a / b - 1) * 100 }')"
printf 'added p50 at c=1: %s us (nginx: %s us)\n' "$OVERHEAD" "$OVERHEAD_NGINX"
printf 'RSS: %s KiB idle, %s KiB at 1000 connections\n' "$RSS_IDLE" "$RSS_1000"
