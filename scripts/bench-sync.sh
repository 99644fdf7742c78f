#!/usr/bin/env bash
# Write-path and sync benchmark (release build, local bare remote): record latency against
# the naive pull-per-write path, batch throughput, cost against file size, one sync against
# `git pull --rebase && git push`, and 16 clones syncing at once. See scripts/bench_sync.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally --example gen_usage
exec python3 scripts/bench_sync.py target/release/git-tally target/release/examples/gen_usage
