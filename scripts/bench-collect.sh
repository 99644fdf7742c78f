#!/usr/bin/env bash
# Collector benchmark (release build, local redis-server): records per second from the
# proxy's queue into the durable journal, `collect --once` over N queued records, and the
# peak RSS at 10k and at 100k records (it must not grow with the number of records).
# Goal: >= 20,000 records/s at 100k. Medians of RUNS runs (default 3), default --batch.
#   scripts/bench-collect.sh [RUNS]
# Needs redis-server and redis-cli (Debian: apt-get install redis-server) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
for p in redis-server redis-cli python3; do
  command -v "$p" >/dev/null || { echo "bench-collect: $p is not installed (apt-get install redis-server python3)" >&2; exit 2; }
done
cargo build --release --quiet --bin git-tally
target=${CARGO_TARGET_DIR:-target}; case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/git-tally
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-collect.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=bench-key-$$
redis-server --port "$port" --bind 127.0.0.1 --requirepass "$key" --save '' --appendonly no \
  --dir "$work" --daemonize no >/dev/null 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null; wait $redis_pid 2>/dev/null; rm -rf "$work"' EXIT
rcli() { redis-cli -p "$port" -a "$key" --no-auth-warning "$@"; }
for _ in $(seq 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.05; done
printf '%s\n' "$key" > "$work/key"; chmod 600 "$work/key"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_SYSTEM=/dev/null
printf '%-8s %6s %10s %14s %10s\n' records runs median_s records_per_s peak_MB
declare -A rss
for n in 10000 100000; do
  python3 scripts/gen_cpa_queue.py gen "$n" --seed 1 > "$work/q-$n.jsonl"
  python3 scripts/gen_cpa_queue.py resp "$work/q-$n.jsonl" > "$work/q-$n.resp"
  # Each run: a fresh repository, the queue loaded again.
  prepare="rm -rf '$work/repo' && git init -q -b main '$work/repo' && git -C '$work/repo' -c user.email=b@e -c user.name=b commit -q --allow-empty -m init \
    && redis-cli -p $port -a $key --no-auth-warning del usage >/dev/null && redis-cli -p $port -a $key --no-auth-warning --pipe < '$work/q-$n.resp' >/dev/null"
  # exec: the timed process is git-tally itself; its per-batch lines go to a log.
  read -r secs kib _ < <(python3 scripts/bench-run.py "$runs" --prepare "$prepare" -- \
    sh -c 'exec "$@" >>"$0" 2>&1' "$work/collect.log" "$bin" -C "$work/repo" collect cliproxyapi --url "redis://127.0.0.1:$port" --key-file "$work/key" --once)
  left=$(rcli llen usage)
  [ "$left" = 0 ] || { echo "bench-collect: $left records left in the queue" >&2; exit 1; }
  rss[$n]=$kib
  python3 - "$n" "$runs" "$secs" "$kib" <<'PY'
import sys
n, runs, s, kib = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"{n:<8} {runs:6} {s:10.3f} {n/s:14,.0f} {kib/1024:10.1f}")
PY
done
python3 -c "import sys; print(f'peak RSS 100k/10k: {int(sys.argv[2])/int(sys.argv[1]):.2f}')" "${rss[10000]}" "${rss[100000]}"
