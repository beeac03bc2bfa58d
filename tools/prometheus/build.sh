#!/usr/bin/env bash
# Build Prometheus and promtool from the Go module proxy, pinned by
# tools/prometheus/go.{mod,sum}, into a cache outside the clone:
#
#   ${VPBLU_PROMETHEUS_DIR:-$HOME/.cache/vpblu/prometheus}/<key>/bin/{prometheus,promtool}
#   ${VPBLU_PROMETHEUS_DIR:-$HOME/.cache/vpblu/prometheus}/current -> <key>/bin
#
# <key> is derived from the pins, so they are rebuilt only when the pins
# change. Progress goes to stderr; the last (only) line on stdout is the bin
# directory:   dir=$(tools/prometheus/build.sh | tail -1)
#
# The metrics tests (tests/tests/prometheus.rs, tests/tests/prometheus_rules.rs)
# look for the binaries at .../current/ (see tests/src/prometheus.rs).
#
# Environment: VPBLU_PROMETHEUS_DIR (cache root), GO (go binary; default: go
# on PATH, else /usr/local/go/bin/go).
set -euo pipefail

# Bump when the build recipe (flags, layout) changes, to force a rebuild.
readonly RECIPE=1
readonly MODULE=github.com/prometheus/prometheus

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOL=prometheus
root=${VPBLU_PROMETHEUS_DIR:-$HOME/.cache/vpblu/prometheus}
pin_files=("$here/go.mod" "$here/go.sum")

# The pinned version, read from go.mod (no go command, no network).
version=$(awk -v m="$MODULE" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[[ -n $version ]] || { echo "prometheus: error: no $MODULE requirement in $here/go.mod" >&2; exit 1; }
label=$version

up_to_date() { [[ -x $bindir/prometheus && -x $bindir/promtool ]]; }

# shellcheck source=tools/go-cached-build.sh
source "$here/../go-cached-build.sh"
cache_fast_path
cache_lock
go_toolchain

# remove_all_sd: only static and file service discovery are compiled in (the
# tests need nothing else), which leaves out the cloud SDKs and halves the
# build. Without the builtinassets tag the web UI is not embedded; the HTTP
# API, which is all the tests use, is unaffected.
tags=remove_all_sd
# Prometheus 3.x's module version v0.3XX.Y is release 3.XX.Y.
rest=${version#v0.}          # 316.0
minor=${rest%%.*}           # 316
release="${minor:0:1}.${minor:1}.${rest#*.}"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
go_build prometheus "$here" "$MODULE/cmd/prometheus" -tags "$tags" -ldflags "$ldflags"
go_build promtool "$here" "$MODULE/cmd/promtool" -tags "$tags" -ldflags "$ldflags"
for b in prometheus promtool; do
	"$bindir/$b" --version >>"$keydir/logs/$b.log" 2>&1 ||
		die "the built $b does not run (see $keydir/logs/$b.log)"
done
say "$("$bindir/prometheus" --version 2>&1 | head -1)"
cache_done
