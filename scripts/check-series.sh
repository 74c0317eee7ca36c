#!/usr/bin/env bash
# Checks that every prefix of a series applies, imports and passes its base's upstream
# tests (main: test/rb/, v0.6.0: test/test_rb.py): the series is bisectable. Runs on the
# fork built by scripts/fork.sh from a checkout or a clone.
set -euo pipefail

usage() { echo "usage: scripts/check-series.sh [--series main|v0.6.0]   (after scripts/fork.sh --series SERIES --checkout PATH, or a clone base)"; }

source "$(dirname "$0")/series.sh"
series_parse_args "$@"
series_load "$SERIES"
case "${ARGS[0]:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac
CHECK=$BUILD_DIR/series-check
say() { echo "check-series.sh: $*"; }
die() { echo "check-series.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no .venv/$SERIES: run scripts/fork.sh --series $SERIES first"
[ -e "$FORK/$UPSTREAM_TESTS" ] && [ -f "$FORK/setup.py" ] \
  || die "build/$SERIES/torchrl has no $UPSTREAM_TESTS (wheel base): run scripts/fork.sh --series $SERIES --checkout PATH"
so=$(ls "$FORK"/torchrl/_torchrl*.so 2>/dev/null | head -n 1) \
  || die "build/$SERIES/torchrl has no built C++ extension: run scripts/fork.sh --series $SERIES"

# the C++ sources are not touched by the series: every prefix reuses the extension built once
rm -rf "$CHECK"
git -C "$FORK" worktree prune
git -C "$FORK" worktree add -q --detach "$CHECK" "$BASE_TAG"
trap 'git -C "$FORK" worktree remove --force "$CHECK" >/dev/null 2>&1 || true' EXIT

status=0
results=()
for commit in $(git -C "$FORK" rev-list --reverse "$BASE_TAG..HEAD") "$BASE_TAG"; do
  git -C "$CHECK" checkout -q "$commit"
  cp "$so" "$CHECK/torchrl/"
  title=$(git -C "$CHECK" log -1 --format=%s)
  [ "$commit" = "$BASE_TAG" ] && title="(base) $title"
  say "$title"
  if ! (cd "$CHECK" && PYTHONPATH=$CHECK "$PY" -c "import torchrl.data, torchrl._torchrl") ; then
    results+=("does not import: $title"); status=1; continue
  fi
  log=$(mktemp)
  rc=0
  (cd "$CHECK" && PYTHONPATH=$CHECK "$PY" -m pytest "$UPSTREAM_TESTS" -n 2 -q -p no:cacheprovider -rfE >"$log" 2>&1) || rc=$?
  summary=$(tail -n 1 "$log")
  [ "$rc" -eq 0 ] || status=1
  results+=("${summary//=/}: $title")
  # which tests failed, and why, in a line each
  while read -r failed; do
    results+=("    $failed")
  done < <(grep -E '^(FAILED|ERROR) ' "$log" || true)
  rm -f "$log"
done
say "upstream $UPSTREAM_TESTS at each prefix:"
printf '    %s\n' "${results[@]}"
exit "$status"
