#!/usr/bin/env bash
# Makes tests/fixtures/v01/<profile>.tar.gz: repositories written by git-tally 0.1, for the
# migration tests (tests/migrate.rs). Each holds a bare remote and two clones, `a` and `b`:
#   a records 3 events and syncs; b records 2 and syncs; a syncs (pulls b's);
#   a records 2 more and stops (in 0.1's journal, not folded);
#   b records 1 more and pulls (committed, not pushed).
# Every request once: 8.
# tests/fixtures/v01/cliproxyapi-filemode.tar.gz: the same remote and clones, where an
# application (a proxy that never re-reads its file) writes each clone's usage.json:
#   a's app writes a1..a3, a syncs; b's app writes b1..b2, b syncs; a syncs (pulls);
#   a's app writes a1..a4 (its own requests only), not synced yet.
# Every request once: 6 (a1..a4, b1..b2). Beside them, app-a-next.json (the app's next
# write, a1..a5) and truth.json (one machine's file with a1..a5, b1..b2). The application's files are made by 0.1 itself,
# recording into a scratch repository with tally.enabled = false.
# Builds 0.1 (commit $V01_COMMIT, default the last 0.1 commit of this
# repository) in a temporary worktree, unless V01_BIN names a 0.1 binary.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
commit="${V01_COMMIT:-615168d}"
work="$(mktemp -d)"
cleanup() {
  git -C "$here" worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bin="${V01_BIN:-}"
if [ -z "$bin" ]; then
  git -C "$here" worktree add -q --detach "$work/src" "$commit"
  (cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build -q --release)
  bin="$work/target/release/git-tally"
fi
mkdir -p "$work/bin"
ln -s "$bin" "$work/bin/git-tally"

out="$here/tests/fixtures/v01"
mkdir -p "$out"

# A hermetic git: no user or system config, fixed identities and dates.
export PATH="$work/bin:$PATH" HOME="$work/home" GIT_CONFIG_GLOBAL="$work/home/.gitconfig" GIT_CONFIG_SYSTEM=/dev/null
export GIT_AUTHOR_NAME=Test GIT_AUTHOR_EMAIL=test@example.com GIT_COMMITTER_NAME=Test GIT_COMMITTER_EMAIL=test@example.com
export GIT_AUTHOR_DATE=2026-11-01T12:00:00Z GIT_COMMITTER_DATE=2026-11-01T12:00:00Z LC_ALL=C
mkdir -p "$HOME"
: >"$GIT_CONFIG_GLOBAL"

# Event i of machine m (JSON, one line).
event() {
  local m=$1 i=$2 minute off=0
  [ "$m" = b ] && off=1
  minute=$(printf '%02d' $((i * 2 + off)))
  printf '{"id":"%s-e%d","timestamp":"2026-11-0%dT10:%s:00Z","device":"%s","provider":"openai","api":"key-%s","model":"gpt-5","input_tokens":%d,"output_tokens":%d,"cached_tokens":%d,"cost_usd":0.25,"source":"%s@example.com","auth_index":"0"}\n' \
    "$m" "$i" $((1 + i % 3)) "$minute" "$m" "$m" $((100 + i)) $((7 + i)) $((i % 3)) "$m"
}
record() { # machine, first, last
  local m=$1 i
  for ((i = $2; i <= $3; i++)); do event "$m" "$i"; done | (cd "$dir/$m" && git tally record >/dev/null)
}

for profile in cliproxyapi tally; do
  dir="$work/$profile"
  mkdir -p "$dir"
  git init -q --bare -b main "$dir/remote.git"
  for m in a b; do
    git clone -q "file://$dir/remote.git" "$dir/$m" 2>/dev/null
    git -C "$dir/$m" config tally.device "$m"
    git -C "$dir/$m" config tally.profile "$profile"
    git -C "$dir/$m" config commit.gpgsign false
  done
  record a 1 3
  (cd "$dir/a" && git tally sync >/dev/null)
  record b 1 2
  (cd "$dir/b" && git tally sync >/dev/null)
  (cd "$dir/a" && git tally sync >/dev/null)
  record a 4 5
  record b 3 3
  (cd "$dir/b" && git tally pull >/dev/null)
  tar -C "$dir" --sort=name --mtime=2026-11-01 --owner=0 --group=0 --numeric-owner -czf "$out/$profile.tar.gz" remote.git a b
  echo "wrote $out/$profile.tar.gz ($(du -k "$out/$profile.tar.gz" | cut -f1) KB)"
done

# File mode: the application writes the usage file.
dir="$work/filemode"
mkdir -p "$dir"
git init -q --bare -b main "$dir/remote.git"
for m in a b; do
  git clone -q "file://$dir/remote.git" "$dir/$m" 2>/dev/null
  git -C "$dir/$m" config tally.device "$m"
  git -C "$dir/$m" config tally.profile cliproxyapi
  git -C "$dir/$m" config commit.gpgsign false
  git init -q -b main "$dir/app-$m"
  git -C "$dir/app-$m" config tally.enabled false
  git -C "$dir/app-$m" config tally.profile cliproxyapi
  git -C "$dir/app-$m" config tally.device "$m"
done
app_writes() { # machine, first, last: the app records, then writes its whole file
  local m=$1 i
  for ((i = $2; i <= $3; i++)); do event "$m" "$i"; done | (cd "$dir/app-$m" && git tally record >/dev/null)
  mkdir -p "$dir/$m/usage"
  cp "$dir/app-$m/usage/usage.json" "$dir/$m/usage/usage.json.tmp"
  mv "$dir/$m/usage/usage.json.tmp" "$dir/$m/usage/usage.json"
}
app_writes a 1 3
(cd "$dir/a" && git tally sync >/dev/null)
app_writes b 1 2
(cd "$dir/b" && git tally sync >/dev/null)
(cd "$dir/a" && git tally sync >/dev/null)
app_writes a 4 4
# For the test, made by the same application: its next write (a1..a5), and one machine's
# file holding every request once (a1..a5, b1..b2).
for i in 5; do event a $i; done | (cd "$dir/app-a" && git tally record >/dev/null)
cp "$dir/app-a/usage/usage.json" "$dir/app-a-next.json"
git init -q -b main "$dir/app-truth"
git -C "$dir/app-truth" config tally.enabled false
git -C "$dir/app-truth" config tally.profile cliproxyapi
{ for i in 1 2 3 4 5; do event a $i; done; for i in 1 2; do event b $i; done; } | (cd "$dir/app-truth" && git tally record >/dev/null)
cp "$dir/app-truth/usage/usage.json" "$dir/truth.json"
tar -C "$dir" --sort=name --mtime=2026-11-01 --owner=0 --group=0 --numeric-owner -czf "$out/cliproxyapi-filemode.tar.gz" remote.git a b app-a-next.json truth.json
echo "wrote $out/cliproxyapi-filemode.tar.gz ($(du -k "$out/cliproxyapi-filemode.tar.gz" | cut -f1) KB)"
