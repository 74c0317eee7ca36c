#!/usr/bin/env bash
# Regenerates patches/ and patches/series from the commits of build/torchrl on top of v0.6.0.
set -euo pipefail

usage() { echo "usage: scripts/export-patches.sh   (after editing the commits in build/torchrl)"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FORK=$ROOT/build/torchrl
die() { echo "export-patches.sh: error: $*" >&2; exit 1; }

[ -d "$FORK/.git" ] || die "no build/torchrl: run scripts/fork.sh --checkout PATH first"
[ "$(cat "$FORK/.git/rb-compile-mode")" != wheel ] \
  || die "build/torchrl has a wheel base, whose patches lack their test/ hunks: run scripts/fork.sh --checkout PATH"
[ -z "$(git -C "$FORK" status --porcelain --untracked-files=no)" ] \
  || die "build/torchrl has uncommitted changes: commit them (one commit per patch) first"
count=$(git -C "$FORK" rev-list --count v0.6.0..HEAD)
[ "$count" -gt 0 ] || die "build/torchrl has no commit on top of v0.6.0"

tmp=$(mktemp -d)
git -C "$FORK" format-patch -q --no-signature v0.6.0..HEAD -o "$tmp"
rm -f "$ROOT"/patches/*.patch
mv "$tmp"/*.patch "$ROOT/patches/"
rmdir "$tmp"
{
  echo "# The patch series against torchrl v0.6.0, in the order scripts/fork.sh applies it."
  echo "# Regenerated with git format-patch from build/torchrl (see CONTRIBUTING.md)."
  (cd "$ROOT/patches" && ls -1 *.patch)
} >"$ROOT/patches/series"
# patches/ now holds this HEAD: scripts/fork.sh may rebuild over it
git -C "$FORK" rev-parse HEAD >"$FORK/.git/rb-compile-head"
echo "export-patches.sh: wrote $count patches to patches/ (review with git diff patches/)"
