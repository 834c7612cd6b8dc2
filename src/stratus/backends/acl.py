"""POSIX access ACLs, read and written as the kernel's ``system.posix_acl_access`` attribute: how
one namespace's user is let read a file or a tree without opening it to anyone else.

The format is the kernel's ABI (``include/uapi/linux/posix_acl_xattr.h``): a version word,
then (tag, permissions, id) entries sorted by tag and id. A few lines of ``struct`` rather than
a dependency: pylibacl, the maintained binding, is a C extension that needs libacl's headers to
build, and running setfacl would cost a process per file.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF  # the id of the entries that name no one (owner, group, mask, other)
R, W, X = 4, 2, 1
_ENTRY = struct.Struct("<HHI")

Entries = dict[tuple[int, int], int]  # (tag, id) -> permissions


def from_mode(mode: int) -> Entries:
    """The minimal ACL a file without one has: its mode bits."""
    return {(USER_OBJ, UNDEFINED): (mode >> 6) & 7, (GROUP_OBJ, UNDEFINED): (mode >> 3) & 7,
            (OTHER, UNDEFINED): mode & 7}


def decode(data: bytes) -> Entries:
    (version,) = struct.unpack_from("<I", data)
    if version != VERSION or (len(data) - 4) % _ENTRY.size:
        raise ValueError(f"not a version {VERSION} POSIX ACL ({len(data)} bytes)")
    return {(tag, ident): perms for tag, perms, ident in _ENTRY.iter_unpack(data[4:])}


def encode(entries: Entries) -> bytes:
    """The attribute's bytes; the mask is recomputed (the union of the group class: named users
    and groups and the owning group), as the kernel requires once anyone is named."""
    entries = {key: perms for key, perms in entries.items() if key[0] != MASK}
    named = [perms for (tag, _), perms in entries.items() if tag in (USER, GROUP)]
    if named:
        mask = entries.get((GROUP_OBJ, UNDEFINED), 0)
        for perms in named:
            mask |= perms
        entries[(MASK, UNDEFINED)] = mask
    return struct.pack("<I", VERSION) + b"".join(
        _ENTRY.pack(tag, perms, ident) for (tag, ident), perms in sorted(entries.items()))


def with_user(entries: Entries, uid: int, perms: int) -> Entries:
    """``entries`` with ``uid`` allowed ``perms`` too (added to what it had)."""
    return {**entries, (USER, uid): entries.get((USER, uid), 0) | perms}


def user_perms(entries: Entries, uid: int) -> int:
    return entries.get((USER, uid), 0)


# -- on disk ---------------------------------------------------------------------------------
def read_acl(path: Path) -> Entries:
    try:
        return decode(os.getxattr(path, XATTR))
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        return from_mode(os.stat(path).st_mode)


def allow_user(path: Path, uid: int, perms: int) -> None:
    """Let ``uid`` have ``perms`` on ``path`` (followed if a link), unless it has them already.
    A file system without ACLs fails with an OSError that says so."""
    entries = read_acl(path)
    if user_perms(entries, uid) & perms == perms:
        return
    try:
        os.setxattr(path, XATTR, encode(with_user(entries, uid, perms)))
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            raise OSError(exc.errno, f"{path}: its file system does not support POSIX ACLs") \
                from None
        raise


def read_perms(path: Path) -> int:
    """What a reader needs: read, and search (directories) or execute (executables)."""
    mode = os.stat(path).st_mode
    return R | X if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else R
