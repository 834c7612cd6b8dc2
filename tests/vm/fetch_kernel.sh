#!/usr/bin/env bash
# The guest kernel for the cgroup v2 tests (tests/vm/guest.py): Debian's linux-image package,
# downloaded and unpacked into tests/.vm-cache/kernel rather than installed, so the host's
# boot set-up (initramfs-tools, udev) is not touched. Only what the guest loads is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.vm-cache/kernel
if compgen -G "$target/boot/vmlinuz-*" >/dev/null; then
    exit 0
fi
# The package lists are updated at most once: when they do not know the kernel package, or
# when its download fails on stale lists (a second update would fetch the same lists again).
updated=no
package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$package" ]; then
    apt-get update -qq
    updated=yes
    package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
fi
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
(cd "$download" && apt-get download -q "$package" 2>/dev/null) || {
    [ "$updated" = yes ] || apt-get update -qq
    (cd "$download" && apt-get download -q "$package")
}
mkdir -p "$target.partial"
dpkg-deb --fsys-tarfile "$download"/*.deb | tar -x -C "$target.partial" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/modules.*' './lib/modules/*/kernel/fs/*' \
    './lib/modules/*/kernel/net/*' './lib/modules/*/kernel/drivers/virtio/*' \
    './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*'
rm -rf "$target"
mv "$target.partial" "$target"
echo "guest kernel: $(ls "$target"/boot)"
