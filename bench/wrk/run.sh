#!/usr/bin/env bash
# Reproduces the sidecar-vs-bare figures in bench/README.md: one run, same
# machine, same wrk settings, loopback only.
#   bash bench/wrk/run.sh [duration] [connections] [threads]
# Needs wrk (Debian: apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
dur=${1:-10s}; conns=${2:-32}; threads=${3:-2}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk"; exit 1; }
out=$(mktemp -d)
go build -o "$out/pennon" ./cmd/pennon
go build -o "$out/bare" ./bench/bare
"$out/bare" -addr 127.0.0.1:18081 & bare=$!
"$out/pennon" sidecar --file bench/wrk/flags.json --addr 127.0.0.1:18016 --log-level warn & side=$!
trap 'kill $bare $side 2>/dev/null; wait 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:18016/readyz >/dev/null && break; sleep 0.1; done
run() { # label url
  local r
  r=$(wrk -t"$threads" -c"$conns" -d"$dur" --latency -s bench/wrk/post.lua "$2")
  printf '%-22s %12s req/s   p50 %8s   p99 %8s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$r")" \
    "$(awk '$1=="50%" {print $2}' <<<"$r")" "$(awk '$1=="99%" {print $2}' <<<"$r")"
}
echo "wrk -t$threads -c$conns -d$dur, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run "bare fasthttp (40 B)" http://127.0.0.1:18081/
run "pennon static" http://127.0.0.1:18016/ofrep/v1/evaluate/flags/static
run "pennon 5-clause" http://127.0.0.1:18016/ofrep/v1/evaluate/flags/targeting5
run "bare fasthttp (again)" http://127.0.0.1:18081/
rss=$(awk '/VmRSS/ {print $2}' /proc/$side/status)
echo "sidecar RSS after the run: $((rss/1024)) MiB (2 flags)"

# RSS with 1,000 flags (half with targeting), after a short load.
{
  printf '{"flags":{'
  for i in $(seq 1 1000); do
    [ "$i" -gt 1 ] && printf ','
    if [ $((i % 2)) -eq 0 ]; then
      printf '"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"country"},["SE","NO","DK"]]},"on","off"]}}' "$i"
    else
      printf '"f%d":{"state":"ENABLED","variants":{"a":"alpha","b":"beta"},"defaultVariant":"a"}' "$i"
    fi
  done
  printf '}}'
} > "$out/flags1000.json"
"$out/pennon" sidecar --file "$out/flags1000.json" --addr 127.0.0.1:18017 --log-level warn & big=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18017/readyz >/dev/null && break; sleep 0.1; done
wrk -t1 -c8 -d3s -s bench/wrk/post.lua http://127.0.0.1:18017/ofrep/v1/evaluate/flags/f500 >/dev/null
curl -s -X POST http://127.0.0.1:18017/ofrep/v1/evaluate/flags -H 'Content-Type: application/json' -d '{"context":{"country":"SE"}}' >/dev/null
rss=$(awk '/VmRSS/ {print $2}' /proc/$big/status)
echo "sidecar RSS with 1,000 flags: $((rss/1024)) MiB"
kill $big
