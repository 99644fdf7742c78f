#!/usr/bin/env bash
# Build and install git-tally, and register its merge driver globally.
#   scripts/install.sh            install (idempotent)
#   scripts/install.sh --demo     install, then run the two-machine merge demo
#   scripts/install.sh --uninstall
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --uninstall)
    git-tally uninstall --global || true
    cargo uninstall git-tally || true
    exit 0 ;;
esac
cargo install --locked --quiet --path . --root "${CARGO_HOME:-$HOME/.cargo}"
bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$bin:"*) ;; *) echo "note: add $bin to PATH so git finds git-tally"; export PATH="$bin:$PATH" ;; esac
git-tally install --global
if [ "${1:-}" = "--demo" ]; then exec git-tally demo; fi
