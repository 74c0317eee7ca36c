#!/usr/bin/env bash
# Builds a patched torchrl fork: the base of a series (torchrl main by default, or v0.6.0)
# plus patches/SERIES/series, installed editable in .venv/SERIES, then prints the compile report.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/fork.sh [--series main|v0.6.0] [--checkout PATH] [--base checkout|clone|wheel]
                       [--torch VERSION] [--no-report | --full-report [--no-timing]]
                       [--report-md FILE]
       scripts/fork.sh [--series main|v0.6.0] --check

Gets the base of the series into build/SERIES/torchrl, applies patches/SERIES/series with
`git am` (one commit per patch), installs it editable into .venv/SERIES with the pinned
dependencies of ci/requirements-SERIES.txt, and prints the compile report of the seed's cases
(it fails, after the build, when a case or combination misses the goal).

  --series NAME      main (default: torchrl main at ae9719f, 2026-08-22) or v0.6.0
                     (torchrl v0.6.0); each has its own build/NAME/ and .venv/NAME/

The base comes from, in this order:
  --checkout PATH (or $TORCHRL_CHECKOUT)  a clean torchrl clone at the series' base commit
                                          (main: ae9719f; v0.6.0: the tag or baba52b9);
                                          it is cloned, never modified
  a git fetch of the upstream repository  when the network allows (gives up after ~10 s)
  the series' wheel                       its .py sources from the package index
                                          (main: torchrl-nightly==2026.8.22, v0.6.0:
                                          torchrl==0.6.0); test/, setup.py and the C++
                                          sources are absent
--base forces one of them.

  --torch VERSION    torch to install (ci/torch-versions-SERIES.txt; default: its first line)
  --no-report        skip the compile report
  --full-report      the report's every case, its timings and the whole matrix too
                     (about 25 minutes on 2 CPUs)
  --no-timing        with --full-report: all but the timings (16 to 20 minutes; CI runs
                     this: scripts/bench.py times the buffers)
  --report-md FILE   also write the compile report as markdown to FILE
  --check            change nothing: exit 0 when build/SERIES/torchrl and .venv/SERIES are
                     what fork.sh would build from patches/SERIES and the scripts now,
                     1 (and say why) when it would rebuild or reinstall them
EOF
}

source "$(dirname "$0")/series.sh"
series_parse_args "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
series_load "$SERIES"
UPSTREAM_URL=https://github.com/pytorch/rl.git

checkout=${TORCHRL_CHECKOUT:-}
base=""
torch_version=""
report=1
report_args=()
full_report=0
no_timing=0
check=0
build_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --checkout) checkout=${2:?--checkout needs a path}; build_opts+=("$1"); shift 2 ;;
    --base) base=${2:?--base needs checkout, clone or wheel}; build_opts+=("$1"); shift 2 ;;
    --torch) torch_version=${2:?--torch needs a version}; build_opts+=("$1"); shift 2 ;;
    --no-report) report=0; build_opts+=("$1"); shift ;;
    --full-report) full_report=1; report_args+=(--full); build_opts+=("$1"); shift ;;
    --no-timing) no_timing=1; report_args+=(--no-timing); build_opts+=("$1"); shift ;;
    --report-md) report_args+=(--markdown "${2:?--report-md needs a file}"); build_opts+=("$1"); shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fork.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

say() { echo "fork.sh: $*"; }
die() { echo "fork.sh: error: $*" >&2; exit 1; }
rel() { echo "${1#"$ROOT"/}"; }
stale() { echo "fork.sh: $*: run scripts/fork.sh --series $SERIES" >&2; exit 1; }

if [ "$check" = 1 ]; then
  [ ${#build_opts[@]} -eq 0 ] || die "--check takes no other option than --series (not ${build_opts[*]}): it checks the existing build"
  checkout=""  # the base of the existing build, not $TORCHRL_CHECKOUT
  [ -f "$FORK/.git/rb-compile-fingerprint" ] && [ -f "$FORK/.git/rb-compile-mode" ] \
    || stale "no $(rel "$FORK") built yet"
  [ -f "$VENV/.rb-compile-torch" ] || stale "no $(rel "$VENV") installed yet"
  say() { :; }  # only the verdict
fi

if [ -z "$torch_version" ] && [ -f "$VENV/.rb-compile-torch" ]; then
  # nothing asked: keep the torch of the existing venv
  torch_version=$(cat "$VENV/.rb-compile-torch")
  say "reusing torch $torch_version of $(rel "$VENV") (--torch VERSION to change it)"
fi
supported_torch=$(grep -v '^#' "$TORCH_VERSIONS")
[ -n "$torch_version" ] || torch_version=$(head -n 1 <<<"$supported_torch")
if ! grep -qx "$torch_version" <<<"$supported_torch"; then
  die "torch $torch_version is not supported by the $SERIES series; pick one of: $(tr '\n' ' ' <<<"$supported_torch")"
fi
if [ "$no_timing" = 1 ] && { [ "$full_report" = 0 ] || [ "$report" = 0 ]; }; then
  die "--no-timing goes with --full-report (the seed's report has no timings)"
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
  say "reusing the $base base of $(rel "$FORK") (--checkout PATH or --base to change it)"
fi

# ---- the series --------------------------------------------------------------
[ -f "$PATCH_DIR/series" ] || die "$(rel "$PATCH_DIR")/series is missing"
mapfile -t patches < <(grep -v -e '^#' -e '^[[:space:]]*$' "$PATCH_DIR/series")
for p in "${patches[@]}"; do
  [ -f "$PATCH_DIR/$p" ] || die "$(rel "$PATCH_DIR")/series lists $p, which is not in $(rel "$PATCH_DIR")/"
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
  if ! grep -qw "$head" <<<"$BASE_COMMITS"; then
    die "checkout $dir is at $head, not at the base of the $SERIES series, $BASE_NAME ($BASE_COMMITS): run 'git -C $dir checkout $CLONE_REF', or pick the series with --series"
  fi
}

if [ "$base" = checkout ]; then
  checkout=$(cd "$checkout" 2>/dev/null && pwd) || die "checkout '$checkout': no such directory"
  check_checkout "$checkout"
  source_id="checkout:$(git -C "$checkout" rev-parse HEAD)"
elif [ -z "$base" ]; then
  say "trying a git fetch of $UPSTREAM_URL (gives up after 10 s when offline)"
  if GIT_TERMINAL_PROMPT=0 timeout 10 git ls-remote --exit-code "$UPSTREAM_URL" HEAD >/dev/null 2>&1; then
    base=clone
  else
    say "the upstream repository cannot be reached: using the $WHEEL_SPEC wheel from the package index"
    base=wheel
  fi
fi
[ "$base" = checkout ] || source_id=$base

# What this build is made of (base, this script, the series): re-running with the same inputs reuses it.
fingerprint=$( (echo "$SERIES $source_id"; cat "$ROOT/scripts/fork.sh" "$ROOT/scripts/series.sh" "$PATCH_DIR/series"; for p in "${patches[@]}"; do cat "$PATCH_DIR/$p"; done) | sha256sum | cut -c1-16)

# ... and its editable install into the venv, with this torch
install_id="$fingerprint-$torch_version"

fork_is_current() {
  [ -f "$FORK/.git/rb-compile-fingerprint" ] && [ "$(cat "$FORK/.git/rb-compile-fingerprint")" = "$fingerprint" ]
}

if [ "$check" = 1 ]; then
  fork_is_current || stale "$(rel "$FORK") is older than $(rel "$PATCH_DIR") or the scripts"
  [ "$(cat "$VENV/.rb-compile-installed" 2>/dev/null)" = "$install_id" ] \
    || stale "$(rel "$FORK") is not installed into $(rel "$VENV") with torch $torch_version"
  echo "fork.sh: $(rel "$FORK") is up to date and installed into $(rel "$VENV") (torch $torch_version)"
  exit 0
fi

get_base() {  # get_base DIR: a git work tree at the base, on branch rb-compile, tagged BASE_TAG
  local dir=$1
  case "$base" in
    checkout)
      say "base: your checkout $checkout"
      git clone -q --no-checkout "$checkout" "$dir"
      git -C "$dir" checkout -q -B rb-compile "$(git -C "$checkout" rev-parse HEAD)"
      ;;
    clone)
      say "base: git fetch of $UPSTREAM_URL at $CLONE_REF"
      git init -q "$dir"
      GIT_TERMINAL_PROMPT=0 git -C "$dir" fetch -q --depth 1 "$UPSTREAM_URL" "$CLONE_REF" \
        || die "git fetch of $UPSTREAM_URL failed: pass --checkout PATH or --base wheel"
      git -C "$dir" checkout -q -B rb-compile FETCH_HEAD
      ;;
    wheel)
      say "base: sources of the $WHEEL_SPEC wheel from the package index"
      local tmp
      tmp=$(mktemp -d)
      pip_download "$tmp"
      mkdir -p "$dir"
      (cd "$dir" && python3 -m zipfile -e "$tmp"/$WHEEL_GLOB "$tmp/unpacked" >/dev/null)
      (cd "$tmp/unpacked" && find torchrl -name '*.py' -print0 | xargs -0 cp --parents -t "$dir")
      rm -rf "$tmp"
      git -C "$dir" init -q -b rb-compile
      git -C "$dir" add -A
      git -C "$dir" -c user.name=fork.sh -c user.email=fork.sh@localhost \
        commit -q -m "$BASE_NAME: the .py sources of the $WHEEL_SPEC wheel on the package index"
      ;;
  esac
  git -C "$dir" tag -f "$BASE_TAG" >/dev/null
}

pip_download() {
  local python=python3
  [ -x "$VENV/bin/python" ] && python=$VENV/bin/python
  "$python" -m pip download -q --no-deps --only-binary=:all: "$WHEEL_SPEC" -d "$1" 2>/dev/null \
    || die "could not download $WHEEL_SPEC from the package index: pass --checkout PATH to a torchrl clone"
}

apply_series() {  # apply_series DIR
  local dir=$1 p path excluded=() exclude_args=() left_out=0
  if [ ${#patches[@]} -eq 0 ]; then
    say "$(rel "$PATCH_DIR")/series lists no patch yet: the fork is its base"
    return
  fi
  if [ "$base" = wheel ]; then
    # hunks for files the wheel lacks (test/, setup.py, C++ sources) are left out
    for p in "${patches[@]}"; do
      while read -r path; do
        if [ ! -e "$dir/$path" ]; then
          excluded+=("$p: $path")
          exclude_args+=("--exclude=$path")
        fi
      done < <(sed -n 's|^diff --git a/\(.*\) b/.*|\1|p' "$PATCH_DIR/$p")
    done
  fi
  local am_log
  am_log=$(mktemp)
  if ! git -C "$dir" -c user.name=fork.sh -c user.email=fork.sh@localhost \
      am --quiet --keep-non-patch --empty=keep "${exclude_args[@]}" "${patches[@]/#/$PATCH_DIR/}" >"$am_log" 2>&1; then
    local failed file
    failed=$(sed -n 's/^Patch failed at \([0-9]*\) \(.*\)/\1 (\2)/p' "$am_log" | head -n 1)
    file=$(sed -n 's/^error: patch failed: \([^:]*\):.*/\1/p; s/^error: \([^:]*\): does not exist in index/\1/p' "$am_log" | head -n 1)
    cat "$am_log" >&2
    git -C "$dir" am --abort >/dev/null 2>&1 || true
    rm -f "$am_log"
    die "patch ${failed:-?} does not apply to ${file:-the base}: is the base at $BASE_NAME?"
  fi
  rm -f "$am_log"
  say "applied ${#patches[@]} patches, one commit each:"
  git -C "$dir" log --format='    %h %s' "$BASE_TAG..HEAD" | tac
  if [ ${#excluded[@]} -gt 0 ]; then
    say "left out (the wheel has no such file; build from a checkout to apply them):"
    printf '    %s\n' "${excluded[@]}"
  fi
}

unexported_work() {  # prints what of the fork patches/SERIES does not hold, if anything
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
  say "$(rel "$FORK") is up to date ($(cat "$FORK/.git/rb-compile-mode") base, series $fingerprint)"
else
  # a rebuild replaces the fork: never over work that is not in patches/SERIES yet
  if work=$(unexported_work); then
    die "$(rel "$FORK") has $work, which $(rel "$PATCH_DIR") does not hold: export them (scripts/export-patches.sh --series $SERIES) or move $(rel "$FORK") away before rebuilding"
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
  # a new work tree: the editable install (and a checkout's built C++ extension,
  # which lived in the old one) must be redone, even with the same fingerprint
  rm -f "$VENV/.rb-compile-installed"
fi
mode=$(cat "$FORK/.git/rb-compile-mode")

# ---- the environment ---------------------------------------------------------
requirements=$(sed "s/^torch==.*/torch==$torch_version/" "$REQUIREMENTS")
req_stamp=$(echo "$requirements" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $(rel "$VENV")"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$VENV/.rb-compile-requirements" 2>/dev/null)" != "$req_stamp" ]; then
  say "installing the pinned dependencies (torch $torch_version) into $(rel "$VENV")"
  echo "$requirements" >"$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q -r "$VENV/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
    || die "torch $torch_version did not install into $(rel "$VENV") (see pip's output above)"
  echo "$req_stamp" >"$VENV/.rb-compile-requirements"
  rm -f "$VENV/.rb-compile-installed"
fi
echo "$torch_version" >"$VENV/.rb-compile-torch"

# ---- the fork, editable ------------------------------------------------------
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$(cat "$VENV/.rb-compile-installed" 2>/dev/null)" != "$install_id" ]; then
  "$VENV/bin/python" -m pip uninstall -q -y torchrl >/dev/null 2>&1 || true
  rm -f "$site/torchrl-fork.pth"
  if [ "$mode" = wheel ]; then
    # no setup.py to build with: put the work tree on the path
    echo "$FORK" >"$site/torchrl-fork.pth"
    say "installed $(rel "$FORK") on $(rel "$VENV")'s path (wheel mode: no C++ extension)"
  else
    say "building $(rel "$FORK") editable, with its C++ extension (about a minute)"
    cuda_home=${CUDA_HOME:-}
    if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
      # no GPU here: build the CPU extension only (a CUDA build of torch brings an nvcc,
      # and torch's CUDA build then fails for want of a GPU architecture to target)
      cuda_home=$BUILD_DIR/no-cuda
      mkdir -p "$cuda_home"
    fi
    CUDA_HOME=$cuda_home "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e "$FORK" 2>&1 \
      | grep -v "^WARNING: Location" || true
  fi
  echo "$install_id" >"$VENV/.rb-compile-installed"
fi
"$PY" -c "import torchrl.data" 2>/dev/null || die "the fork does not import: run '$(rel "$PY") -c \"import torchrl.data\"' to see why"
if ! "$PY" -c "import torchrl._torchrl" >/dev/null 2>&1; then
  # (main: the nightly wheel's extension is built for another torch, undefined symbol on 2.13)
  say "note: no C++ extension (torchrl._torchrl): the prioritized samplers use the torch-op"
  say "      segment trees of the series instead; build from a checkout (--checkout PATH) to"
  say "      compile the C++ ones against this torch"
fi
say "fork ready: $(rel "$FORK") ($SERIES series, $mode base, torch $torch_version); python: $(rel "$PY")"

if [ "$report" = 1 ]; then
  say "compile report (graphs counted with a counting backend):"
  RB_SERIES=$SERIES "$PY" "$ROOT/scripts/compile_report.py" --series "$SERIES" ${report_args[@]+"${report_args[@]}"} \
    || die "the fork is built and installed, but the compile report shows cases that miss the goal (named above)"
fi
