#!/usr/bin/env bash
# Build and install git-tally into $CARGO_HOME/bin (default ~/.cargo/bin), and register its
# merge driver globally (git config --global, global attributes file). Idempotent.
#   scripts/install.sh              install
#   scripts/install.sh --demo       install, then run the two-machine demo
#   scripts/install.sh --uninstall  remove the driver registration and the binary
# GIT_TALLY_BIN=/path/to/git-tally installs that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${CARGO_HOME:-$HOME/.cargo}"
bin="$root/bin"
case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
if [ "${1:-}" = "--uninstall" ]; then
  if [ -x "$bin/git-tally" ]; then "$bin/git-tally" uninstall --global >/dev/null; fi
  rm -f "$bin/git-tally"
  echo "git-tally uninstalled"
  exit 0
fi
if [ -n "${GIT_TALLY_BIN:-}" ]; then
  mkdir -p "$bin"
  if ! cmp -s "$GIT_TALLY_BIN" "$bin/git-tally"; then install -m 755 "$GIT_TALLY_BIN" "$bin/git-tally"; fi
else
  cargo install --locked --quiet --path . --root "$root"
fi
git-tally install --global >/dev/null
echo "git-tally $(git-tally --version | cut -d' ' -f2) installed in $bin; merge driver registered globally"
case ":${PATH#"$bin:"}:" in *":$bin:"*) ;; *) echo "note: add $bin to PATH so git finds git-tally" ;; esac
if [ "${1:-}" = "--demo" ]; then exec git-tally demo; fi
