#!/usr/bin/env bash
# Install the Debian packages whose commands are missing; nothing when all are there.
# Usage: tools/debian-packages.sh COMMAND[:PACKAGE]...  (PACKAGE defaults to COMMAND)
#
# A fresh machine often has empty or stale package lists, on which `apt-get install` fails:
# the lists are updated first when they are empty, and once more after a failed install.
set -euo pipefail

missing=()
for spec in "$@"; do
    command_name=${spec%%:*}
    package=${spec#*:}
    command -v "$command_name" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; installing them needs root (apt-get), or install them first" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
lists=${APT_LISTS_DIR:-/var/lib/apt/lists}
updated=no
if ! compgen -G "$lists/*_Packages*" >/dev/null; then
    apt-get update
    updated=yes
fi
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    [ "$updated" = yes ] && exit 1
    echo "apt-get install failed; updating the package lists and trying once more" >&2
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
