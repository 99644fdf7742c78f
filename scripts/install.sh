#!/usr/bin/env bash
# Build and install git-tally into $CARGO_HOME/bin (default ~/.cargo/bin), register its
# merge driver globally (git config --global, global attributes file) by absolute path,
# and install the manual and shell completions. Idempotent: a second run changes nothing.
#   scripts/install.sh              install
#   scripts/install.sh --demo       install, then run the two-machine demo
#   scripts/install.sh --uninstall  remove all of it
# GIT_TALLY_BIN=/path/to/git-tally installs that binary instead of building one.
#
# Where things go, and why there:
#   $root/bin/git-tally                      the binary
#   $root/share/man/man1/git-tally.1         man-db finds <dir>/../share/man for every <dir> on
#                                            PATH, so wherever `git tally` works (git-tally on
#                                            PATH), `man git-tally` and `git tally --help` do too
#   $XDG_DATA_HOME/bash-completion/completions/git-tally
#                                            bash-completion loads it on demand, for `git-tally`
#                                            and (through git's completion) for `git tally`
#   $XDG_DATA_HOME/zsh/site-functions/_git-tally   (add the directory to fpath)
#   $XDG_CONFIG_HOME/fish/completions/git-tally.fish
set -euo pipefail
cd "$(dirname "$0")/.."
root="${CARGO_HOME:-$HOME/.cargo}"
bin="$root/bin"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
config="${XDG_CONFIG_HOME:-$HOME/.config}"
man_page="$root/share/man/man1/git-tally.1"
bash_completion="$data/bash-completion/completions/git-tally"
zsh_completion="$data/zsh/site-functions/_git-tally"
fish_completion="$config/fish/completions/git-tally.fish"

# put FILE: stdin becomes FILE, only if it differs (so a second run touches nothing, not
# even the directory: the comparison copy lives in $TMPDIR).
put() {
  local tmp
  tmp="$(mktemp)"
  cat > "$tmp"
  if ! cmp -s "$tmp" "$1"; then
    mkdir -p "$(dirname "$1")"
    install -m 644 "$tmp" "$1"
  fi
  rm -f "$tmp"
}

if [ "${1:-}" = "--uninstall" ]; then
  if [ -x "$bin/git-tally" ]; then "$bin/git-tally" uninstall --global >/dev/null; fi
  rm -f "$bin/git-tally" "$man_page" "$bash_completion" "$zsh_completion" "$fish_completion"
  echo "git-tally uninstalled (binary, driver registration, manual, completions)"
  exit 0
fi

if [ -n "${GIT_TALLY_BIN:-}" ]; then
  mkdir -p "$bin"
  if ! cmp -s "$GIT_TALLY_BIN" "$bin/git-tally"; then install -m 755 "$GIT_TALLY_BIN" "$bin/git-tally"; fi
else
  cargo install --locked --quiet --path . --root "$root"
fi
exe="$bin/git-tally"
"$exe" install --global >/dev/null
"$exe" man | put "$man_page"
"$exe" completions bash | put "$bash_completion"
"$exe" completions zsh | put "$zsh_completion"
"$exe" completions fish | put "$fish_completion"

echo "git-tally $("$exe" --version | cut -d' ' -f2) installed in $bin; merge driver registered globally (as $exe)"
echo "manual: $man_page (man git-tally, git tally --help)"
echo "completions: $bash_completion, $zsh_completion, $fish_completion"
case ":${PATH}:" in
  *":$bin:"*) ;;
  *) echo "note: add $bin to PATH for \`git tally …\` (and so that man finds the manual)" ;;
esac
if [ ! -f /usr/share/bash-completion/bash_completion ]; then
  echo "note: bash-completion is not installed, so bash will not load the completion by itself: add \`. $bash_completion\` to ~/.bashrc"
fi
echo "note: zsh: put \`fpath=($data/zsh/site-functions \$fpath)\` before compinit in ~/.zshrc"
if [ "${1:-}" = "--demo" ]; then exec "$exe" demo; fi
