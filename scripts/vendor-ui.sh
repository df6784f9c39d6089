#!/usr/bin/env bash
# Refreshes the console's vendored chart library, uPlot (MIT), from the npm registry at the pinned
# version, after checking the package against the registry's pinned integrity hash. Not part of
# the build: the files are committed, so `cargo build` needs no network.
# Usage: scripts/vendor-ui.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.6.32
INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
DEST=crates/serval-server/ui/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" > /dev/null)
got="sha512-$(openssl dgst -sha512 -binary "$tmp/uplot-$VERSION.tgz" | base64 -w0)"
if [[ $got != "$INTEGRITY" ]]; then
  echo "uplot-$VERSION.tgz does not match the pinned integrity ($got)" >&2
  exit 1
fi
tar -xzf "$tmp/uplot-$VERSION.tgz" -C "$tmp"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$DEST/"
cp "$tmp/package/LICENSE" "$DEST/uPlot.LICENSE"
echo "uPlot $VERSION vendored into $DEST"
