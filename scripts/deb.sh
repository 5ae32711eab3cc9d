#!/usr/bin/env bash
# Build the nsq-rs Debian package with dpkg-deb (no cargo-deb needed):
# daemons and tools in /usr/bin, hardened systemd units, example configs in
# /etc/nsq/ (upstream's TOML keys), man pages and bash/zsh/fish completions
# generated from each binary's own flags.
#
#   scripts/deb.sh                        # release build, then target/debian/nsq-rs_VERSION_ARCH.deb
#   scripts/deb.sh --bin-dir target/debug # package binaries already built (what the test does)
#   scripts/deb.sh --out DIR              # write the .deb into DIR
#
# Binaries are stripped when `strip` is available. Prints the package path.
set -euo pipefail
cd "$(dirname "$0")/.."

script=deb.sh
out=target/debian
# shellcheck source=scripts/package-common.sh
. scripts/package-common.sh

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
pkg=nsq-rs
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root

install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/nsq" \
    "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/doc/$pkg"

for b in $daemons $tools; do
    install -m 755 "$bin_dir/$b" "$root/usr/bin/$b"
    if command -v strip >/dev/null; then
        strip --strip-unneeded "$root/usr/bin/$b"
    fi
    # From the binary's own clap Command, so they cannot drift from its flags.
    "$bin_dir/$b" --generate-man | gzip -9n > "$root/usr/share/man/man1/$b.1.gz"
    "$bin_dir/$b" --generate-completion=bash > "$root/usr/share/bash-completion/completions/$b"
    "$bin_dir/$b" --generate-completion=zsh > "$root/usr/share/zsh/vendor-completions/_$b"
    "$bin_dir/$b" --generate-completion=fish > "$root/usr/share/fish/vendor_completions.d/$b.fish"
done
for d in $daemons; do
    install -m 644 "packaging/systemd/$d.service" "$root/lib/systemd/system/$d.service"
    install -m 644 "packaging/etc/$d.conf" "$root/etc/nsq/$d.conf"
done
install -m 644 contrib/alerts.yml contrib/grafana/nsq-overview.json "$root/usr/share/doc/$pkg/"
install -m 644 README.md "$root/usr/share/doc/$pkg/README.md"
for s in postinst prerm postrm; do
    install -m 755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) > "$root/DEBIAN/conffiles"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: nsq-rs developers <nsq-rs@localhost>
Installed-Size: $size
Depends: libc6, passwd
Conflicts: nsq
Section: net
Priority: optional
Homepage: https://nsq.io
Description: NSQ 1.3.0-compatible messaging daemons written in Rust
 nsqd, nsqlookupd and nsqadmin speak NSQ 1.3.0's TCP and HTTP protocols and
 accept its flags and config files, with the command-line tools to_nsq,
 nsq_tail, nsq_stat, nsq_to_file, nsq_to_http, nsq_to_nsq and nsq-job. Includes hardened systemd
 units (disabled until enabled), example configs in /etc/nsq, man pages and
 shell completions.
CONTROL

mkdir -p "$out"
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb -Zgzip --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
