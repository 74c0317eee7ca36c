# Sourced by the scripts of scripts/: what each patch series is built on, and where it lives.
#   series_parse_args "$@"  takes --series NAME out of the arguments (left in ARGS)
#   series_load NAME        sets the variables below for that series, or dies
# Each series has its own patches/NAME/, build/NAME/ and .venv/NAME/, so both can be built
# side by side.

SERIES_NAMES="main v0.6.0"
SERIES_DEFAULT=main

series_parse_args() {
  SERIES=${RB_SERIES:-$SERIES_DEFAULT}
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --series)
        [ $# -ge 2 ] || { echo "${0##*/}: error: --series needs one of: $SERIES_NAMES" >&2; exit 2; }
        SERIES=$2; shift 2 ;;
      --series=*) SERIES=${1#--series=}; shift ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

series_load() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  case "$1" in
    main)
      # torchrl main on 2026-08-22; the torchrl-nightly 2026.8.22 wheel holds its torchrl/
      BASE_COMMITS="ae9719f17b1517af5c2523a36c4616f003ee55cf"
      BASE_NAME="torchrl main ae9719f"
      CLONE_REF=ae9719f17b1517af5c2523a36c4616f003ee55cf
      WHEEL_SPEC="torchrl-nightly==2026.8.22"
      WHEEL_GLOB="torchrl_nightly-2026.8.22-*.whl"
      UPSTREAM_TESTS="test/rb"
      ;;
    v0.6.0)
      # the v0.6.0 tag, and the commit whose torchrl/ and test/test_rb.py it matches
      BASE_COMMITS="7bf320c37b67328d9da17bc38a3fd723bd45cd6e baba52b9a13d5416ff622e486fee9b3f05f51f2f"
      BASE_NAME="torchrl v0.6.0"
      CLONE_REF=v0.6.0
      WHEEL_SPEC="torchrl==0.6.0"
      WHEEL_GLOB="torchrl-0.6.0-*.whl"
      UPSTREAM_TESTS="test/test_rb.py"
      ;;
    *)
      echo "${0##*/}: error: unknown series '$1': pick one of: $SERIES_NAMES" >&2
      exit 2 ;;
  esac
  SERIES=$1
  ROOT=$root
  PATCH_DIR=$ROOT/patches/$SERIES
  BUILD_DIR=$ROOT/build/$SERIES
  FORK=$BUILD_DIR/torchrl
  VENV=$ROOT/.venv/$SERIES
  PY=$VENV/bin/python
  REQUIREMENTS=$ROOT/ci/requirements-$SERIES.txt
  TORCH_VERSIONS=$ROOT/ci/torch-versions-$SERIES.txt
  # the tag that marks the base in build/NAME/torchrl: the series is BASE_TAG..HEAD
  BASE_TAG=series-base
}
