# shellcheck shell=bash
# shellcheck disable=SC2154 # TOOL, RECIPE, root, pin_files, label: set by the sourcing script
# Shared by tools/*/build.sh: build Go programs pinned by a go.mod/go.sum
# into a cache outside the clone, keyed by the pins, so they are rebuilt only
# when the pins change.
#
# The caller sets, then sources this file:
#   TOOL       prefix for messages ("testbed", "wireguard-go")
#   RECIPE     bumped when the build recipe changes, to force a rebuild
#   root       cache root; key = "<label>-<hash of RECIPE and pin_files>"
#   pin_files  the go.mod/go.sum files (array)
#   label      human part of the key (versions)
# and defines up_to_date() (reads $bindir). Then:
#   cache_fast_path   exits 0 printing $bindir when everything is built
#   cache_lock        takes the per-root build lock (waits for another build)
#   go_toolchain      finds go, checks it against every pinned go.mod's go line
#   go_build NAME DIR PKG [go build args...]
#   cache_done        checks, points current at $bindir, prints it
set -euo pipefail

say() { printf '%s: %s\n' "$TOOL" "$*" >&2; }
die() { say "error: $*"; exit 1; }

for f in "${pin_files[@]}"; do [[ -f $f ]] || die "missing pin file $f"; done
hash=$( { echo "recipe $RECIPE"; cat "${pin_files[@]}"; } | sha256sum | cut -c1-12)
key="$label-$hash"
keydir="$root/$key"
bindir="$keydir/bin"

point_current() {
	# Replace the symlink atomically (rename over the old one).
	ln -sfn "$key/bin" "$root/.current.$$"
	mv -Tf "$root/.current.$$" "$root/current"
}

cache_fast_path() {
	up_to_date || return 0
	[[ $(readlink "$root/current" 2>/dev/null || true) == "$key/bin" ]] || point_current
	say "up to date ($bindir)"
	echo "$bindir"
	exit 0
}

# One build at a time per cache root; a second caller waits, then finds the
# binaries already built.
cache_lock() {
	mkdir -p "$bindir" "$keydir/logs"
	exec 9>"$root/.lock"
	if ! flock -n 9; then
		say "another build holds $root/.lock; waiting"
		flock 9
	fi
	cache_fast_path
}

go_toolchain() {
	export GOTOOLCHAIN=local CGO_ENABLED=0
	go=${GO:-}
	if [[ -z $go ]]; then
		if command -v go >/dev/null 2>&1; then go=go
		elif [[ -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go
		else die "no Go toolchain found (put go on PATH or set GO=/path/to/go)"
		fi
	fi
	have=$("$go" env GOVERSION) || die "'$go env GOVERSION' failed"
	have=${have#go}
	local mods=() f need
	for f in "${pin_files[@]}"; do [[ $f == *.mod ]] && mods+=("$f"); done
	need=$(awk '$1 == "go" { print $2 }' "${mods[@]}" | sort -V | tail -1)
	if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
		die "Go $need or newer is needed (go.mod 'go' line); $go is go$have. GOTOOLCHAIN=local: no toolchain is downloaded"
	fi
}

# go_build NAME MODULE_DIR PACKAGE [extra go build args...]
go_build() {
	local name=$1 dir=$2 pkg=$3
	shift 3
	local log="$keydir/logs/$name.log" start=$SECONDS
	if [[ -x $bindir/$name ]]; then
		say "$name: already built"
		return 0
	fi
	say "building $name ($pkg) with go$have; log: $log"
	local cmd=("$go" build -v -mod=readonly -trimpath "$@" -o "$bindir/.$name.tmp" "$pkg")
	if ! { echo "+ cd $dir && ${cmd[*]}"; (cd "$dir" && "${cmd[@]}"); } >"$log" 2>&1; then
		say "$name: build FAILED after $((SECONDS - start))s; last lines of $log:"
		tail -n 40 "$log" >&2
		rm -f "$bindir/.$name.tmp"
		die "building $name failed (full log: $log)"
	fi
	mv -f "$bindir/.$name.tmp" "$bindir/$name"
	say "$name: built in $((SECONDS - start))s ($(du -h "$bindir/$name" | cut -f1))"
}

# k8s_ldflags VERSION: -ldflags for a Kubernetes binary, with the -X stamps of
# kubernetes' hack/lib/version.sh, so `--version`, /version and kubeadm's
# checks report the pinned release.
k8s_ldflags() {
	local version=$1 major minor p flags="-s -w"
	minor=${version#v*.}
	minor=${minor%%.*}
	major=${version#v}
	major=${major%%.*}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		flags+=" -X $p.gitTreeState=clean -X $p.gitCommit= -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	echo "$flags"
}

cache_done() {
	up_to_date || die "binaries missing after build in $bindir"
	point_current
	echo "$bindir"
}
