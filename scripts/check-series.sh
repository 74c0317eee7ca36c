#!/usr/bin/env bash
# Checks that every prefix of the series applies, imports and passes upstream's
# test/test_rb.py (bisectable), on the fork built by scripts/fork.sh from a checkout.
set -euo pipefail

usage() { echo "usage: scripts/check-series.sh   (after scripts/fork.sh --checkout PATH, or a clone base)"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORK=$ROOT/build/torchrl
CHECK=$ROOT/build/series-check
PY=$ROOT/.venv/bin/python
say() { echo "check-series.sh: $*"; }
die() { echo "check-series.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no .venv: run scripts/fork.sh first"
[ -f "$FORK/test/test_rb.py" ] && [ -f "$FORK/setup.py" ] \
  || die "build/torchrl has no test/test_rb.py (wheel base): run scripts/fork.sh --checkout PATH"
so=$(ls "$FORK"/torchrl/_torchrl*.so 2>/dev/null | head -n 1) \
  || die "build/torchrl has no built C++ extension: run scripts/fork.sh"

# the C++ sources are not touched by the series: every prefix reuses the extension built once
rm -rf "$CHECK"
git -C "$FORK" worktree prune
git -C "$FORK" worktree add -q --detach "$CHECK" v0.6.0
trap 'git -C "$FORK" worktree remove --force "$CHECK" >/dev/null 2>&1 || true' EXIT

status=0
results=()
for commit in $(git -C "$FORK" rev-list --reverse v0.6.0..HEAD) v0.6.0; do
  git -C "$CHECK" checkout -q "$commit"
  cp "$so" "$CHECK/torchrl/"
  title=$(git -C "$CHECK" log -1 --format=%s)
  [ "$commit" = v0.6.0 ] && title="(base) $title"
  say "$title"
  if ! (cd "$CHECK" && PYTHONPATH=$CHECK "$PY" -c "import torchrl.data, torchrl._torchrl") ; then
    results+=("does not import: $title"); status=1; continue
  fi
  log=$(mktemp)
  rc=0
  (cd "$CHECK" && PYTHONPATH=$CHECK "$PY" -m pytest test/test_rb.py -n 2 -q -p no:cacheprovider -rfE >"$log" 2>&1) || rc=$?
  summary=$(tail -n 1 "$log")
  [ "$rc" -eq 0 ] || status=1
  results+=("${summary//=/}: $title")
  # which tests failed, and why, in a line each
  while read -r failed; do
    results+=("    $failed")
  done < <(grep -E '^(FAILED|ERROR) ' "$log" || true)
  rm -f "$log"
done
say "upstream test/test_rb.py at each prefix:"
printf '    %s\n' "${results[@]}"
exit "$status"
