#!/usr/bin/env bash
# Builds the patched torchrl fork: torchrl v0.6.0 plus patches/series, installed
# editable in .venv, then prints the compile report.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/fork.sh [--checkout PATH] [--base checkout|clone|wheel] [--torch VERSION]
                       [--no-report] [--report-md FILE]

Gets torchrl v0.6.0 into build/torchrl, applies patches/series with `git am` (one
commit per patch), installs it editable into .venv with the pinned dependencies of
ci/requirements.txt, and prints the compile report.

The base comes from, in this order:
  --checkout PATH (or $TORCHRL_CHECKOUT)  a clean torchrl clone at v0.6.0 or baba52b9;
                                          it is cloned, never modified
  a git clone of the upstream repository  when the network allows (gives up after ~10 s)
  the torchrl==0.6.0 wheel                its .py sources from the package index; test/,
                                          setup.py and the C++ sources are absent
--base forces one of them.

  --torch VERSION    torch to install (ci/torch-versions.txt; default: its first line)
  --no-report        skip the compile report
  --report-md FILE   also write the compile report as markdown to FILE
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=$ROOT/build
FORK=$BUILD_DIR/torchrl
VENV=$ROOT/.venv
UPSTREAM_URL=https://github.com/pytorch/rl.git
# torchrl's v0.6.0 tag, and the commit whose torchrl/ and test/test_rb.py it matches
TAG_COMMIT=7bf320c37b67328d9da17bc38a3fd723bd45cd6e
TREE_COMMIT=baba52b9a13d5416ff622e486fee9b3f05f51f2f

checkout=${TORCHRL_CHECKOUT:-}
base=""
torch_version=""
report=1
report_md=""
while [ $# -gt 0 ]; do
  case "$1" in
    --checkout) checkout=${2:?--checkout needs a path}; shift 2 ;;
    --base) base=${2:?--base needs checkout, clone or wheel}; shift 2 ;;
    --torch) torch_version=${2:?--torch needs a version}; shift 2 ;;
    --no-report) report=0; shift ;;
    --report-md) report_md=${2:?--report-md needs a file}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fork.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

say() { echo "fork.sh: $*"; }
die() { echo "fork.sh: error: $*" >&2; exit 1; }

if [ -z "$torch_version" ] && [ -f "$VENV/.rb-compile-torch" ]; then
  # nothing asked: keep the torch of the existing .venv
  torch_version=$(cat "$VENV/.rb-compile-torch")
  say "reusing torch $torch_version of .venv (--torch VERSION to change it)"
fi
supported_torch=$(grep -v '^#' "$ROOT/ci/torch-versions.txt")
[ -n "$torch_version" ] || torch_version=$(head -n 1 <<<"$supported_torch")
if ! grep -qx "$torch_version" <<<"$supported_torch"; then
  die "torch $torch_version is not supported; pick one of: $(tr '\n' ' ' <<<"$supported_torch")"
fi
case "$base" in
  ""|checkout|clone|wheel) ;;
  *) die "--base takes checkout, clone or wheel, not '$base'" ;;
esac
if [ "$base" = checkout ] && [ -z "$checkout" ]; then
  die "--base checkout needs --checkout PATH (or TORCHRL_CHECKOUT)"
fi
[ -z "$checkout" ] || [ -z "$base" ] || [ "$base" = checkout ] || checkout=""
[ -n "$checkout" ] && base=checkout
if [ -z "$base" ] && [ -f "$FORK/.git/rb-compile-mode" ]; then
  # nothing asked: keep the base of the existing build (no network probe on re-runs)
  base=$(cat "$FORK/.git/rb-compile-mode")
  [ "$base" != checkout ] || checkout=$(cat "$FORK/.git/rb-compile-checkout" 2>/dev/null || true)
  say "reusing the $base base of build/torchrl (--checkout PATH or --base to change it)"
fi

# ---- the series --------------------------------------------------------------
mapfile -t patches < <(grep -v -e '^#' -e '^[[:space:]]*$' "$ROOT/patches/series")
[ ${#patches[@]} -gt 0 ] || die "patches/series lists no patch"
for p in "${patches[@]}"; do
  [ -f "$ROOT/patches/$p" ] || die "patches/series lists $p, which is not in patches/"
done

# ---- the base ----------------------------------------------------------------
check_checkout() {
  local dir=$1 head
  git -C "$dir" rev-parse --git-dir >/dev/null 2>&1 \
    || die "--checkout $dir is not a git work tree of torchrl"
  if [ -n "$(git -C "$dir" status --porcelain --untracked-files=no)" ]; then
    die "checkout $dir has uncommitted changes: commit or stash them first (it is cloned, never modified)"
  fi
  head=$(git -C "$dir" rev-parse HEAD)
  if [ "$head" != "$TAG_COMMIT" ] && [ "$head" != "$TREE_COMMIT" ]; then
    die "checkout $dir is at $head, not at v0.6.0 ($TAG_COMMIT) or baba52b9: run 'git -C $dir checkout v0.6.0'"
  fi
}

if [ "$base" = checkout ]; then
  checkout=$(cd "$checkout" 2>/dev/null && pwd) || die "checkout '$checkout': no such directory"
  check_checkout "$checkout"
  source_id="checkout:$(git -C "$checkout" rev-parse HEAD)"
elif [ -z "$base" ]; then
  say "trying a git clone of $UPSTREAM_URL (gives up after 10 s when offline)"
  if GIT_TERMINAL_PROMPT=0 timeout 10 git ls-remote --exit-code "$UPSTREAM_URL" refs/tags/v0.6.0 >/dev/null 2>&1; then
    base=clone
  else
    say "the upstream repository cannot be reached: using the torchrl==0.6.0 wheel from the package index"
    base=wheel
  fi
fi
[ "$base" = checkout ] || source_id=$base

# What this build is made of (base, this script, the series): re-running with the same inputs reuses it.
fingerprint=$( (echo "$source_id"; cat "$ROOT/scripts/fork.sh" "$ROOT/patches/series"; for p in "${patches[@]}"; do cat "$ROOT/patches/$p"; done) | sha256sum | cut -c1-16)

fork_is_current() {
  [ -f "$FORK/.git/rb-compile-fingerprint" ] && [ "$(cat "$FORK/.git/rb-compile-fingerprint")" = "$fingerprint" ]
}

get_base() {  # get_base DIR: a git work tree at v0.6.0, on branch rb-compile
  local dir=$1
  case "$base" in
    checkout)
      say "base: your checkout $checkout"
      git clone -q --no-checkout "$checkout" "$dir"
      git -C "$dir" checkout -q -B rb-compile "$(git -C "$checkout" rev-parse HEAD)"
      ;;
    clone)
      say "base: git clone of $UPSTREAM_URL at v0.6.0"
      GIT_TERMINAL_PROMPT=0 git clone -q --depth 1 --branch v0.6.0 "$UPSTREAM_URL" "$dir" \
        || die "git clone of $UPSTREAM_URL failed: pass --checkout PATH or --base wheel"
      git -C "$dir" checkout -q -B rb-compile
      ;;
    wheel)
      say "base: sources of the torchrl==0.6.0 wheel from the package index"
      local tmp
      tmp=$(mktemp -d)
      pip_download "$tmp"
      mkdir -p "$dir"
      (cd "$dir" && python3 -m zipfile -e "$tmp"/torchrl-0.6.0-*.whl "$tmp/unpacked" >/dev/null)
      (cd "$tmp/unpacked" && find torchrl -name '*.py' -print0 | xargs -0 cp --parents -t "$dir")
      rm -rf "$tmp"
      git -C "$dir" init -q -b rb-compile
      git -C "$dir" add -A
      git -C "$dir" -c user.name=fork.sh -c user.email=fork.sh@localhost \
        commit -q -m "torchrl 0.6.0: the .py sources of its wheel on the package index"
      ;;
  esac
  git -C "$dir" tag -f v0.6.0 >/dev/null
}

pip_download() {
  local python=python3
  [ -x "$VENV/bin/python" ] && python=$VENV/bin/python
  "$python" -m pip download -q --no-deps --only-binary=:all: torchrl==0.6.0 -d "$1" 2>/dev/null \
    || die "could not download torchrl==0.6.0 from the package index: pass --checkout PATH to a torchrl clone"
}

apply_series() {  # apply_series DIR
  local dir=$1 p path excluded=() exclude_args=() left_out=0
  if [ "$base" = wheel ]; then
    # hunks for files the wheel lacks (test/, setup.py, C++ sources) are left out
    for p in "${patches[@]}"; do
      while read -r path; do
        if [ ! -e "$dir/$path" ]; then
          excluded+=("$p: $path")
          exclude_args+=("--exclude=$path")
        fi
      done < <(sed -n 's|^diff --git a/\(.*\) b/.*|\1|p' "$ROOT/patches/$p")
    done
  fi
  local am_log
  am_log=$(mktemp)
  if ! git -C "$dir" -c user.name=fork.sh -c user.email=fork.sh@localhost \
      am --quiet --keep-non-patch --empty=keep "${exclude_args[@]}" "${patches[@]/#/$ROOT/patches/}" >"$am_log" 2>&1; then
    local failed file
    failed=$(sed -n 's/^Patch failed at \([0-9]*\) \(.*\)/\1 (\2)/p' "$am_log" | head -n 1)
    file=$(sed -n 's/^error: patch failed: \([^:]*\):.*/\1/p; s/^error: \([^:]*\): does not exist in index/\1/p' "$am_log" | head -n 1)
    cat "$am_log" >&2
    git -C "$dir" am --abort >/dev/null 2>&1 || true
    rm -f "$am_log"
    die "patch ${failed:-?} does not apply to ${file:-the base}: is the base at torchrl v0.6.0?"
  fi
  rm -f "$am_log"
  say "applied ${#patches[@]} patches, one commit each:"
  git -C "$dir" log --format='    %h %s' v0.6.0..HEAD | tac
  if [ ${#excluded[@]} -gt 0 ]; then
    say "left out (the wheel has no such file; build from a checkout to apply them):"
    printf '    %s\n' "${excluded[@]}"
  fi
}

unexported_work() {  # prints what of build/torchrl patches/ does not hold, if anything
  [ -d "$FORK/.git" ] || return 1
  if [ -n "$(git -C "$FORK" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    echo "uncommitted changes"
  elif [ -f "$FORK/.git/rb-compile-head" ] \
      && [ "$(git -C "$FORK" rev-parse HEAD)" != "$(cat "$FORK/.git/rb-compile-head")" ]; then
    echo "commits not exported"
  else
    return 1
  fi
}

if fork_is_current; then
  say "build/torchrl is up to date ($(cat "$FORK/.git/rb-compile-mode") base, series $fingerprint)"
else
  # a rebuild replaces build/torchrl: never over work that is not in patches/ yet
  if work=$(unexported_work); then
    die "build/torchrl has $work, which patches/ does not hold: export them (scripts/export-patches.sh) or move build/torchrl away before rebuilding"
  fi
  mkdir -p "$BUILD_DIR"
  new=$(mktemp -d "$BUILD_DIR/torchrl.new.XXXXXX")
  trap 'rm -rf "$new"' EXIT
  rmdir "$new"
  get_base "$new"
  apply_series "$new"
  echo "$fingerprint" >"$new/.git/rb-compile-fingerprint"
  echo "$base" >"$new/.git/rb-compile-mode"
  echo "$checkout" >"$new/.git/rb-compile-checkout"
  git -C "$new" rev-parse HEAD >"$new/.git/rb-compile-head"
  rm -rf "$FORK"
  mv "$new" "$FORK"
  trap - EXIT
fi
mode=$(cat "$FORK/.git/rb-compile-mode")

# ---- the environment ---------------------------------------------------------
requirements=$(sed "s/^torch==.*/torch==$torch_version/" "$ROOT/ci/requirements.txt")
req_stamp=$(echo "$requirements" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  say "creating .venv"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$VENV/.rb-compile-requirements" 2>/dev/null)" != "$req_stamp" ]; then
  say "installing the pinned dependencies (torch $torch_version) into .venv"
  echo "$requirements" >"$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q -r "$VENV/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
    || die "torch $torch_version did not install into .venv (see pip's output above)"
  echo "$req_stamp" >"$VENV/.rb-compile-requirements"
  rm -f "$VENV/.rb-compile-installed"
fi
echo "$torch_version" >"$VENV/.rb-compile-torch"

# ---- the fork, editable ------------------------------------------------------
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
install_id="$fingerprint-$torch_version"
if [ "$(cat "$VENV/.rb-compile-installed" 2>/dev/null)" != "$install_id" ]; then
  "$VENV/bin/python" -m pip uninstall -q -y torchrl >/dev/null 2>&1 || true
  rm -f "$site/torchrl-fork.pth"
  if [ "$mode" = wheel ]; then
    # no setup.py to build with: put the work tree on the path
    echo "$FORK" >"$site/torchrl-fork.pth"
    say "installed build/torchrl on .venv's path (wheel mode: no C++ extension)"
  else
    say "building build/torchrl editable, with its C++ extension (about a minute)"
    "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e "$FORK" 2>&1 \
      | grep -v "^WARNING: Location" || true
  fi
  echo "$install_id" >"$VENV/.rb-compile-installed"
fi
"$VENV/bin/python" -c "import torchrl.data" 2>/dev/null || die "the fork does not import: run '$VENV/bin/python -c \"import torchrl.data\"' to see why"
if ! "$VENV/bin/python" -c "import torchrl._torchrl" >/dev/null 2>&1; then
  say "note: no C++ extension (torchrl._torchrl): the prioritized samplers use the torch-op"
  say "      segment trees of the series instead; build from a checkout for the C++ ones"
fi
say "fork ready: build/torchrl ($mode base, torch $torch_version); python: .venv/bin/python"

if [ "$report" = 1 ]; then
  say "compile report (graphs counted with a counting backend, times with inductor):"
  args=()
  [ -n "$report_md" ] && args+=(--markdown "$report_md")
  "$VENV/bin/python" "$ROOT/scripts/compile_report.py" "${args[@]}"
fi
