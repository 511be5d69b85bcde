#!/usr/bin/env bash
# The sidecar as its own process next to a bare fasthttp process answering
# the same bytes (issue 16: "5-clause targeting end to end on loopback >= 0.80
# of the bare answer in the same run"; "RSS <= 32 MiB at 1k flags after load").
#
#   bash bench/wrk/run.sh [duration] [connections] [rounds]     (default 5s 32 3)
#
# * Builds pennon and bench/bare as the Dockerfile does. Each server is
#   pinned to core 0 and wrk (one thread) to core 1 with taskset, so server
#   and load generator never share a core (SERVER_CPU=.. LOAD_CPU=.. to pick
#   others).
# * For each flag (static, 5-clause targeting, 50/50 rollout) the bare process
#   answers exactly the bytes pennon answered for that flag and context, with
#   the same Server header: same response size, nothing evaluated.
# * Rounds alternate bare, pennon, bare, pennon, ... per flag in one run; the
#   ratio is pennon's total requests over bare's in the same round(s).
# * Then a sidecar with 1,000 flags (half with targeting) gets single-flag and
#   bulk evaluations, and its VmRSS / VmHWM / RssAnon / RssFile are printed
#   from /proc/PID/status, with the Go heap from /metrics. BASE_REV=<rev>
#   also builds that git revision and alternates it with this tree, rounds
#   times: a same-run before/after. ONLY=ratio or ONLY=rss runs one part.
# Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/../.."
dur=${1:-5s}; conns=${2:-32}; rounds=${3:-3}
scpu=${SERVER_CPU:-0}; lcpu=${LOAD_CPU:-1}
for c in wrk taskset curl; do command -v "$c" >/dev/null || { echo "$c not found (wrk: apt-get install wrk)"; exit 1; }; done
out=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$out"' EXIT
# Built as the Dockerfile builds the shipped binary (static, no cgo).
export CGO_ENABLED=0
go build -trimpath -ldflags "-s -w" -o "$out/pennon" ./cmd/pennon
go build -trimpath -ldflags "-s -w" -o "$out/bare" ./bench/bare
ctxbody='{"context":{"targetingKey":"u1","plan":"premium","country":"SE","email":"ann@example.com","age":33,"appVersion":"2.10.1"}}'

# sidecar PORT FILE: a real sidecar, default settings, its gRPC ports moved
# next to PORT so two of them can run at once.
sidecar() {
	taskset -c "$scpu" "$out/pennon" sidecar --file "$2" --addr "127.0.0.1:$1" \
		--grpc-addr "127.0.0.1:$(($1 + 1))" --sync-addr "127.0.0.1:$(($1 + 2))" --log-level warn &
	pids+=($!)
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return; sleep 0.1; done
	echo "sidecar on port $1 did not become ready"; exit 1
}
# wrkrun URL: requests/second of one wrk run (one thread, on the load core).
wrkrun() {
	taskset -c "$lcpu" wrk -t1 -c"$conns" -d"$dur" -s bench/wrk/post.lua "$1" | awk '/Requests\/sec/ {print $2}'
}
# cputicks PID: the process's user + system CPU time in clock ticks.
cputicks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# measure URL PID: "req/s requests cpu-ticks" of one wrk run against the
# server PID. Requests per CPU second of the server is its cost per request,
# which other work on the machine disturbs far less than req/s.
measure() {
	local t0 t1 r
	t0=$(cputicks "$2")
	r=$(taskset -c "$lcpu" wrk -t1 -c"$conns" -d"$dur" -s bench/wrk/post.lua "$1")
	t1=$(cputicks "$2")
	awk -v t=$((t1 - t0)) '/Requests\/sec/ {rps = $2} / requests in / {n = $1} END {print rps, n, t}' <<<"$r"
}

if [ "${ONLY:-}" != rss ]; then
sidecar 18016 bench/wrk/flags.json
side=${pids[-1]}
flags=(static targeting5 rollout)
port=18081
declare -A bareurl barepid
for f in "${flags[@]}"; do
	curl -sf -X POST -H 'Content-Type: application/json' -d "$ctxbody" \
		"http://127.0.0.1:18016/ofrep/v1/evaluate/flags/$f" >"$out/$f.json"
	taskset -c "$scpu" "$out/bare" -addr "127.0.0.1:$port" -body-file "$out/$f.json" -name pennon &
	pids+=($!)
	barepid[$f]=$!
	bareurl[$f]="http://127.0.0.1:$port/ofrep/v1/evaluate/flags/$f"
	port=$((port + 1))
done
for f in "${flags[@]}"; do
	for _ in $(seq 50); do curl -sf -X POST "${bareurl[$f]}" >/dev/null && break; sleep 0.1; done
done

echo "wrk -t1 -c$conns -d$dur, $rounds rounds; servers on cpu $scpu, wrk on cpu $lcpu; $(nproc) cores; $(date -u '+%F %H:%M UTC'); load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A sb sp nb np tb tp
for f in "${flags[@]}"; do sb[$f]=0; sp[$f]=0; nb[$f]=0; np[$f]=0; tb[$f]=0; tp[$f]=0; done
hz=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
	for f in "${flags[@]}"; do
		read -r b bn bt < <(measure "${bareurl[$f]}" "${barepid[$f]}")
		read -r p pn pt < <(measure "http://127.0.0.1:18016/ofrep/v1/evaluate/flags/$f" "$side")
		sb[$f]=$(awk -v a="${sb[$f]}" -v b="$b" 'BEGIN {print a + b}')
		sp[$f]=$(awk -v a="${sp[$f]}" -v b="$p" 'BEGIN {print a + b}')
		nb[$f]=$((nb[$f] + bn)); np[$f]=$((np[$f] + pn)); tb[$f]=$((tb[$f] + bt)); tp[$f]=$((tp[$f] + pt))
		printf 'round %d  %-10s  bare (%3d B) %7.0f req/s %7.0f req/cpu-s   pennon %7.0f req/s %7.0f req/cpu-s   ratio %.3f, per cpu-s %.3f\n' \
			"$r" "$f" "$(wc -c <"$out/$f.json")" "$b" "$(awk -v n="$bn" -v t="$bt" -v hz="$hz" 'BEGIN {print n * hz / t}')" \
			"$p" "$(awk -v n="$pn" -v t="$pt" -v hz="$hz" 'BEGIN {print n * hz / t}')" \
			"$(awk -v p="$p" -v b="$b" 'BEGIN {print p / b}')" "$(awk -v a="$pn" -v b="$pt" -v c="$bn" -v d="$bt" 'BEGIN {print (a / b) / (c / d)}')"
	done
done
for f in "${flags[@]}"; do
	printf 'all rounds  %-10s  pennon / bare: req/s %.3f, requests per server cpu-second %.3f\n' "$f" \
		"$(awk -v p="${sp[$f]}" -v b="${sb[$f]}" 'BEGIN {print p / b}')" \
		"$(awk -v a="${np[$f]}" -v b="${tp[$f]}" -v c="${nb[$f]}" -v d="${tb[$f]}" 'BEGIN {print (a / b) / (c / d)}')"
done
echo "load after the ratio runs: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
[ "${ONLY:-}" = ratio ] && exit 0

# RSS with 1,000 flags (half with targeting) after single-flag and bulk load.
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
} >"$out/flags1000.json"
# rssrun BIN LABEL: a sidecar (BIN) with 1,000 flags, single and bulk load,
# its memory before and after.
rssrun() {
	local bin=$1 label=$2 big rps n t path
	taskset -c "$scpu" "$bin" sidecar --file "$out/flags1000.json" --addr 127.0.0.1:18026 \
		--grpc-addr 127.0.0.1:18027 --sync-addr 127.0.0.1:18028 --log-level warn &
	big=$!
	for _ in $(seq 100); do curl -sf http://127.0.0.1:18026/readyz >/dev/null && break; sleep 0.1; done
	rss() { awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' "/proc/$big/status"; echo; }
	echo "$label, 1,000 flags, ready:          $(rss)"
	local hz line
	hz=$(getconf CLK_TCK)
	line="$label, load:"
	for path in flags/f500 flags/f501 flags; do
		read -r rps n t < <(measure "http://127.0.0.1:18026/ofrep/v1/evaluate/$path" "$big")
		line+=" $path $rps req/s $(awk -v n="$n" -v t="$t" -v hz="$hz" 'BEGIN {printf "%.0f", n * hz / t}') req/cpu-s;"
	done
	echo "$line (flags = bulk over all 1,000)"
	echo "$label, 1,000 flags, after the load: $(rss)"
	curl -s http://127.0.0.1:18026/metrics | awk '/^go_memstats_(heap_inuse|heap_idle|heap_released|stack_sys|gc_sys)_bytes / {printf "%s %.1f MiB  ", substr($1, 13), $2 / 1048576} /^go_gc_gogc_percent / {printf "gogc %s  ", $2} END {print ""}'
	kill "$big"
	wait "$big" 2>/dev/null || true
}
# BASE_REV=<git revision>: also build that revision and alternate it with
# this tree, for a same-run before/after.
if [ -n "${BASE_REV:-}" ]; then
	mkdir "$out/base"
	git archive "$BASE_REV" | tar -x -C "$out/base"
	(cd "$out/base" && go build -trimpath -ldflags "-s -w" -o "$out/pennon-base" ./cmd/pennon)
	for r in $(seq "$rounds"); do
		rssrun "$out/pennon-base" "base $BASE_REV"
		rssrun "$out/pennon" "this tree"
	done
else
	rssrun "$out/pennon" "this tree"
fi
