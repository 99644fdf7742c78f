#!/usr/bin/env bash
# Merge benchmark (release build): CLIProxyAPI snapshots with N details in the base and
# 1k new details on each side. For each N: median merge time (wall and CPU), peak RSS,
# and the floor measured in the same run, alternating with the merge (parse the three
# inputs + write one output with serde_json, no merge logic), with the ratio merge/floor. Targets: ratio <= 1.3 at 100k; peak RSS
# <= 4x the three inputs' size.
#   scripts/bench-merge.sh [SIZES...]   (default: 1000 20000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally --example gen_usage --example floor
target=${CARGO_TARGET_DIR:-target}; case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release; ex=$target/release/examples
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-merge.XXXXXX"); trap 'rm -rf "$work"' EXIT
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 20000 100000)
printf '%-8s %9s %10s %10s %7s %14s %10s %8s\n' details inputs_MB merge_s floor_s ratio cpu_ratio peak_MB rss/in
for n in "${sizes[@]}"; do
  d="$work/$n"; mkdir -p "$d"
  "$ex/gen_usage" "$d/base.json" --seed 1 --details "$n"
  "$ex/gen_usage" "$d/ours.json" --seed 2 --base "$d/base.json" --add 1000
  "$ex/gen_usage" "$d/theirs.json" --seed 3 --base "$d/base.json" --add 1000
  inputs=$(( $(stat -c %s "$d/base.json") + $(stat -c %s "$d/ours.json") + $(stat -c %s "$d/theirs.json") ))
  runs=9; [ "$n" -ge 100000 ] && runs=7
  # The merge and its floor alternate run by run (the machine is shared).
  read -r merge_s merge_rss merge_cpu floor_s _ floor_cpu < <(python3 scripts/bench-run.py "$runs" --prepare "cp '$d/ours.json' '$d/a.json'" -- \
    "$bin/git-tally" merge "$d/base.json" "$d/a.json" "$d/theirs.json" -p usage.json \
    --vs "$ex/floor" "$d/base.json" "$d/ours.json" "$d/theirs.json" "$d/out.json")
  "$bin/git-tally" check "$d/a.json" >/dev/null
  python3 - "$n" "$inputs" "$merge_s" "$floor_s" "$merge_rss" "$merge_cpu" "$floor_cpu" <<'PY'
import sys
n, inputs, m, f, rss, mc, fc = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
print(f"{n:<8} {inputs/2**20:9.1f} {m:10.3f} {f:10.3f} {m/f:7.2f} {f'{mc/fc:.2f} ({mc:.2f}/{fc:.2f})':>14} {rss/1024:10.1f} {rss*1024/inputs:8.2f}")
PY
done
echo "(medians of 7-9 runs, merge and floor alternating; cpu_ratio: CPU seconds merge/floor; merge output verified with git-tally check)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
