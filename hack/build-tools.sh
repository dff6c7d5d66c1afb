#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm) from the Go module proxy into a cache outside the repo.
#
# Each wrapper module under hack/tools/ pins its versions in go.mod/go.sum. The cache directory is
# keyed by a hash of those files, so a build runs only when a pinned version changes.
#
# Usage: hack/build-tools.sh [TOOLSET...]
#   toolsets: k8s etcd kwok helm (the default), coredns metrics-server (the real node's)
# Prints the bin directory of each toolset on stdout as NAME=DIR lines; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}"
toolsets=("$@")
[ ${#toolsets[@]} -gt 0 ] || toolsets=(k8s etcd kwok helm)

log() { printf '[build-tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is required (https://go.dev/dl) and was not found on PATH"; exit 1; }

# Version stamps: without them kube-apiserver reports v0.0.0 and its compatibility-version
# machinery and kubectl's skew checks misbehave.
k8s_ldflags() {
  local v
  v="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/tools/k8s/go.mod")"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$pkg" "$v" "$pkg" "$pkg" "$minor" "$pkg"
  done
}

build_toolset() {
  local name="$1" dir="$here/tools/$1"
  [ -f "$dir/go.mod" ] || { log "unknown toolset '$name' (no $dir/go.mod)"; exit 2; }
  local ldflags="-s -w"
  [ "$name" = k8s ] && ldflags="$ldflags $(k8s_ldflags)"
  local key
  key="$( (cat "$dir/go.mod" "$dir/go.sum"; echo "$ldflags") | sha256sum | cut -c1-16)"
  local out="$cache/bin/$name-$key"
  if [ -f "$out/.complete" ]; then
    log "$name: cached in $out"
    echo "$name=$out"
    return
  fi
  mkdir -p "$out"
  local tool start
  while read -r tool; do
    start=$(date +%s)
    log "$name: building $tool (the first build of a version takes minutes) ..."
    # etcd's main package is go.etcd.io/etcd/server/v3, which go would name "server".
    local target="$out/"
    [ "$name" = etcd ] && target="$out/etcd"
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$target" "$tool") >&2 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      sleep 15
      kill -0 "$pid" 2>/dev/null && log "$name: still building $tool ($(( $(date +%s) - start ))s)"
    done
    wait "$pid" || { log "$name: build of $tool failed"; exit 1; }
    log "$name: built $tool in $(( $(date +%s) - start ))s"
  done < <(awk '/^tool \(/{f=1;next} f&&/^\)/{f=0} f{print $1} /^tool [^(]/{print $2}' "$dir/go.mod")
  touch "$out/.complete"
  echo "$name=$out"
}

for t in "${toolsets[@]}"; do build_toolset "$t"; done
