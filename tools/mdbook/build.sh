#!/usr/bin/env bash
# Build mdBook (the docs site's builder) from crates.io into a cache outside
# the clone, once per version:
#
#   ${VPBLU_MDBOOK_DIR:-$HOME/.cache/vpblu/mdbook}/<version>/bin/mdbook
#
# Only the renderer and search are built (no `mdbook serve`: `make
# docs-serve` serves the built site with Python's http.server). Progress
# goes to stderr; the last (only) line on stdout is the bin directory:
#   dir=$(tools/mdbook/build.sh | tail -1)
set -euo pipefail

readonly VERSION=0.5.4
root=${VPBLU_MDBOOK_DIR:-$HOME/.cache/vpblu/mdbook}
bin=$root/$VERSION/bin/mdbook

if [[ -x $bin ]] && "$bin" --version >/dev/null 2>&1; then
	dirname "$bin"
	exit 0
fi
command -v cargo >/dev/null || {
	echo "mdbook: cargo is needed to build mdBook $VERSION (install Rust with rustup)" >&2
	exit 1
}
mkdir -p "$root"
log=$root/build-$VERSION.log
echo "mdbook: building mdBook $VERSION from crates.io (about 2 minutes); log: $log" >&2
start=$SECONDS
# A target dir of its own: the workspace's would rebuild it on every lock change.
if ! CARGO_TARGET_DIR=$root/target cargo install mdbook --version "$VERSION" --locked \
	--no-default-features --features search --root "$root/$VERSION" >"$log" 2>&1; then
	tail -20 "$log" >&2
	echo "mdbook: building mdBook $VERSION failed (see $log)" >&2
	exit 1
fi
rm -rf "$root/target"
echo "mdbook: built in $((SECONDS - start))s: $("$bin" --version)" >&2
dirname "$bin"
