#!/usr/bin/env bash
# Regenerates patches/SERIES/ and its series file from the commits of build/SERIES/torchrl
# on top of the series' base.
set -euo pipefail

usage() { echo "usage: scripts/export-patches.sh [--series main|v0.6.0]   (after editing the commits in build/SERIES/torchrl)"; }

source "$(dirname "$0")/series.sh"
series_parse_args "$@"
series_load "$SERIES"
case "${ARGS[0]:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac
die() { echo "export-patches.sh: error: $*" >&2; exit 1; }

[ -d "$FORK/.git" ] || die "no build/$SERIES/torchrl: run scripts/fork.sh --series $SERIES --checkout PATH first"
[ "$(cat "$FORK/.git/rb-compile-mode")" != wheel ] \
  || die "build/$SERIES/torchrl has a wheel base, whose patches lack their test/ hunks: run scripts/fork.sh --series $SERIES --checkout PATH"
[ -z "$(git -C "$FORK" status --porcelain --untracked-files=no)" ] \
  || die "build/$SERIES/torchrl has uncommitted changes: commit them (one commit per patch) first"
count=$(git -C "$FORK" rev-list --count "$BASE_TAG..HEAD")
[ "$count" -gt 0 ] || die "build/$SERIES/torchrl has no commit on top of its base"

tmp=$(mktemp -d)
git -C "$FORK" format-patch -q --no-signature "$BASE_TAG..HEAD" -o "$tmp"
mkdir -p "$PATCH_DIR"
rm -f "$PATCH_DIR"/*.patch
mv "$tmp"/*.patch "$PATCH_DIR/"
rmdir "$tmp"
{
  echo "# The patch series against $BASE_NAME, in the order scripts/fork.sh --series $SERIES applies it."
  echo "# Regenerated with git format-patch from build/$SERIES/torchrl (see CONTRIBUTING.md)."
  (cd "$PATCH_DIR" && ls -1 *.patch)
} >"$PATCH_DIR/series"
# patches/SERIES now holds this HEAD: scripts/fork.sh may rebuild over it
git -C "$FORK" rev-parse HEAD >"$FORK/.git/rb-compile-head"
echo "export-patches.sh: wrote $count patches to patches/$SERIES/ (review with git diff patches/$SERIES/)"
