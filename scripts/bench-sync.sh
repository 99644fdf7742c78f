#!/usr/bin/env bash
# Write-path and sync benchmark (release build, local bare remote): record latency against
# the naive pull-per-write path, batch throughput, record with 100k events in the ledger,
# git processes per sync, one sync against `git pull --rebase && git push` (nothing came in;
# the other machine pushed first), record while a sync waits on a hanging remote, and 16
# clones syncing at once. Every ratio is against a baseline measured in the same run.
#   scripts/bench-sync.sh [--quick]     (--quick: few runs, to check the script works)
# See scripts/bench_sync.py. strace, when installed, counts every process a sync execs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally
target=${CARGO_TARGET_DIR:-target}; case $target in /*) ;; *) target=$PWD/$target ;; esac
exec python3 scripts/bench_sync.py "$target/release/git-tally" "$@"
