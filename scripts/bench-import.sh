#!/usr/bin/env bash
# Import and stats benchmark (release build): a generated Claude Code tree (200 files,
# ~140 MB, streaming duplicates) imported in full and then incrementally (after appending
# 1% more lines), in MB/s; and `stats` over a native file holding two years of daily data.
# Targets: full >= 120 MB/s, incremental <= 5% of the full time, stats <= 50 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally
exec python3 scripts/bench_import.py target/release/git-tally
