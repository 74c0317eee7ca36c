#!/usr/bin/env bash
# Runs our acceptance suite (test/) against the fork in .venv, then upstream's
# test/test_rb.py from build/torchrl when the fork has it (checkout or clone base).
set -euo pipefail

usage() {
  echo "usage: scripts/test.sh [--no-upstream] [PYTEST_ARGS...]   (after scripts/fork.sh)"
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
upstream=1
args=()
for arg in "$@"; do
  case "$arg" in
    --no-upstream) upstream=0 ;;
    -h|--help) usage; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

say() { echo "test.sh: $*"; }
die() { echo "test.sh: error: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no .venv: run scripts/fork.sh first"

run_pytest() {  # pytest's exit 5 (no test collected) is a failure here, not a pass
  local rc=0
  "$PY" -m pytest "$@" || rc=$?
  [ "$rc" -ne 5 ] || die "pytest collected no test (pytest $*)"
  return "$rc"
}

say "our acceptance suite (test/) against build/torchrl"
(cd "$ROOT" && run_pytest test -n 2 -p no:cacheprovider "${args[@]}")

if [ "$upstream" = 1 ]; then
  if [ -f "$ROOT/build/torchrl/test/test_rb.py" ]; then
    say "upstream's test/test_rb.py of build/torchrl"
    (cd "$ROOT/build/torchrl" && run_pytest test/test_rb.py -n 2 -q -p no:cacheprovider "${args[@]}")
  else
    say "upstream's test/test_rb.py is not in build/torchrl (wheel base): not run;"
    say "build from a checkout (scripts/fork.sh --checkout PATH) to run it"
  fi
fi
