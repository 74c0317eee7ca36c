#!/usr/bin/env bash
# Runs our acceptance suite (test/) against the fork of a series in .venv/SERIES, then
# upstream's tests of that base (main: test/rb/, v0.6.0: test/test_rb.py) when the fork
# has them (checkout or clone base).
set -euo pipefail

usage() {
  echo "usage: scripts/test.sh [--series main|v0.6.0] [--no-upstream] [PYTEST_ARGS...]   (after scripts/fork.sh)"
}

source "$(dirname "$0")/series.sh"
series_parse_args "$@"
series_load "$SERIES"
upstream=1
args=()
for arg in ${ARGS[@]+"${ARGS[@]}"}; do
  case "$arg" in
    --no-upstream) upstream=0 ;;
    -h|--help) usage; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

say() { echo "test.sh: $*"; }
die() { echo "test.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no .venv/$SERIES: run scripts/fork.sh --series $SERIES first"
# a stale fork is refused rather than tested: the patches would not be the ones tested, and
# test_scripts' own run of fork.sh would rebuild it under the other tests
"$ROOT/scripts/fork.sh" --series "$SERIES" --check >/dev/null \
  || die "build/$SERIES/torchrl is not the build of patches/$SERIES (see above)"

run_pytest() {  # pytest's exit 5 (no test collected) is a failure here, not a pass
  local rc=0
  "$PY" -m pytest "$@" || rc=$?
  [ "$rc" -ne 5 ] || die "pytest collected no test (pytest $*)"
  return "$rc"
}

say "our acceptance suite (test/) against build/$SERIES/torchrl"
(cd "$ROOT" && RB_SERIES=$SERIES run_pytest test -n 2 -p no:cacheprovider ${args[@]+"${args[@]}"})

if [ "$upstream" = 1 ]; then
  if [ -e "$FORK/$UPSTREAM_TESTS" ]; then
    say "upstream's $UPSTREAM_TESTS of build/$SERIES/torchrl"
    (cd "$FORK" && run_pytest "$UPSTREAM_TESTS" -n 2 -q -p no:cacheprovider ${args[@]+"${args[@]}"})
  else
    say "upstream's $UPSTREAM_TESTS is not in build/$SERIES/torchrl (wheel base): not run;"
    say "build from a checkout (scripts/fork.sh --series $SERIES --checkout PATH) to run it"
  fi
fi
