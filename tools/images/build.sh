#!/usr/bin/env bash
# Builds the vpblu-controller and vpblu-daemon images from binaries already
# built, with nothing pulled and no container engine (see build.py):
#
#   tools/images/build.sh BIN_DIR OUT_DIR [--max-mb controller=60,daemon=120]
#
# `make images` passes the release binaries and the size budgets; the image
# test passes the debug ones. Tags come from `git describe`; each archive
# is also tagged :latest. The last lines printed are the sizes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
[[ $# -ge 2 ]] || { echo "usage: $0 BIN_DIR OUT_DIR [--max-mb controller=N,daemon=N]" >&2; exit 2; }
bin_dir=$1 out=$2
shift 2

tag=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
# Commit time: the same commit gives the same image bytes.
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
wg_dir=$("$root/tools/wireguard-go/build.sh" | tail -1)

exec python3 "$here/build.py" --bin-dir "$bin_dir" --out "$out" --tag "$tag" \
	--wireguard-go "$wg_dir/wireguard-go" --epoch "$epoch" --revision "$revision" "$@"
