#!/usr/bin/env bash
# Scale benchmark (issue 9; release build, local bare remote), for the CLIProxyAPI profile
# and the native one in one run: `record` of 10 events + `sync` on a 100,000-request
# history vs a 1,000-request one (goal <= 2x), the bare remote's growth per such sync
# before any gc (goal <= 200 KB), and `record` with an id at 100,000 remembered ids vs
# without an id (goal <= 1.5x). Baselines are measured in the same run.
#   scripts/bench-scale.sh [--runs N] [--days D] [--fresh-day] [--quick]
# See scripts/bench_scale.py for what each option changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally
target=${CARGO_TARGET_DIR:-target}; case $target in /*) ;; *) target=$PWD/$target ;; esac
exec python3 scripts/bench_scale.py "$target/release/git-tally" "$@"
