#!/usr/bin/env bash
# Build a real kuiperd from the Go module proxy with the ordinary Go client.
# Usage: build_kuiperd.sh VERSION OUTDIR   (writes OUTDIR/kuiperd, built with -tags full, and OUTDIR/etc)
set -eu
version=$1
out=$2
command -v go >/dev/null || { echo "build_kuiperd: 'go' is not on PATH; the end-to-end tests need Go to build kuiperd" >&2; exit 1; }
json=$(go mod download -json "github.com/lf-edge/ekuiper/v2@v${version}")
dir=$(printf '%s' "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or ""); sys.exit(1 if d.get("Error") else 0)') || {
  echo "build_kuiperd: go mod download failed: $json" >&2; exit 1; }
src="$out/src"
rm -rf "$src" && mkdir -p "$out"
# The module cache is read-only; build in a writable copy with the module's own go.mod.
cp -r "$dir" "$src" && chmod -R u+w "$src"
# -tags full compiles in the video source (extensions/impl/video, runs ffmpeg from PATH) and the
# zmq source/sink, whose cgo binding needs libzmq's headers and pkg-config file.
"$(dirname "$(readlink -f "$0")")/system_deps.sh" libzmq3-dev pkg-config
cd "$src"
echo "build_kuiperd: building kuiperd v${version} in $src (first build takes minutes)" >&2
# GOWORK=off: the module zip lacks the go.work members (tools/kubernetes ...).
# Same flags as eKuiper's own Makefile (build_full, minus nats); LoadFileType=relative
# makes kuiperd read etc/ and data/ under KuiperBaseKey.
GOWORK=off CGO_ENABLED=1 GOFLAGS=-buildvcs=false go build -trimpath \
  -ldflags="-s -w -X github.com/lf-edge/ekuiper/v2/cmd.Version=v${version} -X github.com/lf-edge/ekuiper/v2/cmd.LoadFileType=relative" \
  -tags full -o "../kuiperd.tmp" ./cmd/kuiperd
cd ..
rm -rf etc && cp -r src/etc etc
mv kuiperd.tmp kuiperd
rm -rf src
echo "build_kuiperd: $(pwd)/kuiperd" >&2
