#!/bin/sh
# Builds the Starling image from a static musl binary.
#
#   docker/build.sh [TAG]          (from anywhere inside the repository; TAG defaults to starling:dev)
#
# Needs: rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools; docker.
# STARLING_BIN=path skips the cargo build and packages that binary (it must be static).
#
# The build context is a temporary directory holding only the binary and docker/rootfs, so
# the multi-gigabyte target/ directory is never sent to the daemon, with or without BuildKit.
set -eu

tag="${1:-starling:dev}"
repo="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "${STARLING_BIN:-}" ]; then
    (cd "$repo" && cargo build --release --target x86_64-unknown-linux-musl -p starling-node --bin starling)
    STARLING_BIN="$repo/target/x86_64-unknown-linux-musl/release/starling"
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$STARLING_BIN" "$context/starling"
cp -R "$repo/docker/rootfs" "$context/rootfs"
docker build -f "$repo/docker/Dockerfile" -t "$tag" "$context"
