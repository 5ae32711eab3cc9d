#!/usr/bin/env bash
# Release artifacts laid out as upstream's: a tarball
# nsq-rs-VERSION.linux-ARCH.tar.gz holding nsq-rs-VERSION.linux-ARCH/bin/
# with the daemons and tools (optimised, stripped), and a checksum file
# nsq-rs-VERSION.linux-ARCH.tar.gz.sha256 (`sha256sum -c` checks it).
#
#   scripts/release.sh                       # cargo build --release, then target/release-artifacts/
#   scripts/release.sh --out DIR             # write the artifacts into DIR
#   scripts/release.sh --bin-dir DIR         # package binaries already built (the test uses debug ones)
#
# Prints the tarball's path.
set -euo pipefail
cd "$(dirname "$0")/.."

script=release.sh
out=target/release-artifacts
# shellcheck source=scripts/package-common.sh
. scripts/package-common.sh

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac
name="nsq-rs-$version.linux-$arch"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -d "$stage/$name/bin"
for b in $daemons $tools; do
    install -m 755 "$bin_dir/$b" "$stage/$name/bin/$b"
    strip --strip-all "$stage/$name/bin/$b"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
tarball="$out/$name.tar.gz"
# Owner and times fixed, so the same binaries give the same tarball.
tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -czf "$tarball" "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$tarball"
