#!/usr/bin/env bash
# Import and stats benchmark (release build), see scripts/bench_import.py for what is measured:
# Claude Code import of a generated 144 MB tree against ccusage's own time on the same tree
# (npm's ccusage when it can run, else the recorded figure) and its per-day cost; the
# incremental re-import; Codex import; `stats` over two years of native data.
# Goals: >= 1.5x ccusage's throughput, incremental <= 5% of the full time, cost per day
# within 0.5% of ccusage's, stats <= 50 ms. `--quick`: a tenth of the trees.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin git-tally
exec python3 scripts/bench_import.py "${CARGO_TARGET_DIR:-target}/release/git-tally" "$@"
