"""What replica users may reach on disk when each namespace runs as its own user: directories
private to one namespace, and the few shared ones that only the *replicas group* may search
(the data dir, its ``run`` and ``logs``, the unpacked code and weights), never list.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from stratus.runtime.sandbox import Identity

# Top-level entries of the data dir that replica users must reach; the rest is closed to them.
REACHABLE = ("run", "logs", "builtin")


def searchable_by_others(path: Path, listable: bool = False) -> bool:
    mode = path.stat().st_mode
    return bool(mode & stat.S_IXOTH) and (not listable or bool(mode & stat.S_IROTH))


def out_of_reach(targets: Iterable[tuple[Path, bool]]) -> str | None:
    """Why another user could not reach one of ``targets`` (path, must it be listable):
    every directory above it must let others search it."""
    for target, listable in targets:
        for directory in [*reversed(target.parents), target]:
            readable = listable and directory == target
            if not searchable_by_others(directory, readable):
                mode = stat.S_IMODE(directory.stat().st_mode)
                return (f"{target} is out of their reach: {directory} is mode {mode:04o} "
                        f"(chmod o+x{'r' if readable else ''} {directory} to let them in)")
    return None


def private_dir(path: Path, identity: Identity | None, own_files: bool = False) -> None:
    """A directory only the namespace's user may enter (and, with ``own_files``, whose files
    it owns: a log it appends to that an earlier run made as root)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if identity is None:
        return
    info = path.stat()
    if info.st_uid != identity.uid or stat.S_IMODE(info.st_mode) != 0o700:
        os.chown(path, identity.uid, identity.gid)
        os.chmod(path, 0o700)
    if own_files:
        for entry in path.iterdir():
            if entry.lstat().st_uid != identity.uid:
                os.chown(entry, identity.uid, identity.gid, follow_symlinks=False)


def link_code(bundle: Path, workdir: Path, identity: Identity | None) -> None:
    """The working directory shows the bundle's files by their names (links), so relative
    paths still find them, while what the replica writes stays in its own directory."""
    if not bundle.is_dir():
        return
    for entry in bundle.iterdir():
        link = workdir / entry.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(entry)
            if identity is not None:
                os.chown(link, identity.uid, identity.gid, follow_symlinks=False)


class GroupAccess:
    """Opens the server's own directories to the replicas group, one path at a time."""

    def __init__(self, gid: int, roots: tuple[Path, ...]) -> None:
        self.gid = gid
        self.roots = roots  # only below these may directories be changed: the server's trees

    def close_data_dir(self, data_dir: Path, log_dir: Path) -> None:
        """Nothing at the top of the data dir (or of its logs) but what replicas need is open
        to others: files written before the server ran with namespace users may be."""
        for directory, keep in ((data_dir, REACHABLE), (log_dir, ())):
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                info = entry.lstat()
                if entry.name not in keep and not stat.S_ISLNK(info.st_mode) \
                        and info.st_mode & 0o007 and (directory == data_dir or
                                                      stat.S_ISREG(info.st_mode)):
                    os.chmod(entry, stat.S_IMODE(info.st_mode) & ~0o007)

    def open_dir(self, directory: Path) -> None:
        """Search (not list) for the replicas group; nothing for others."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = directory.stat()
        mode = (stat.S_IMODE(info.st_mode) & ~0o077) | 0o010
        if info.st_gid != self.gid:
            os.chown(directory, -1, self.gid)
        if stat.S_IMODE(info.st_mode) != mode:
            os.chmod(directory, mode)

    def grant(self, path: Path, tree: bool = False, files: bool = False) -> None:
        """Let the replicas group reach ``path``: search on each directory above it inside the
        server's trees; with ``tree``, read on all of it; with ``files``, read on the file
        and its integrity marker."""
        root = next((r for r in self.roots if path == r or r in path.parents), None)
        if root is not None:
            for directory in [root, *(p for p in reversed(path.parents) if root in p.parents)]:
                if not self._searchable(directory):
                    self.open_dir(directory)
        if files:
            for target in (path, Path(f"{path}.verified")):
                with contextlib.suppress(FileNotFoundError):
                    self._readable(target)
        elif tree and not self._granted_tree(path):
            for top, subdirs, names in os.walk(path):
                self._readable(Path(top))
                for name in names:
                    self._readable(Path(top, name))
                subdirs[:] = [s for s in subdirs if not Path(top, s).is_symlink()]

    def _searchable(self, path: Path) -> bool:
        info = path.stat()
        return bool(info.st_mode & stat.S_IXOTH) or (info.st_gid == self.gid
                                                     and bool(info.st_mode & 0o010))

    def _granted_tree(self, path: Path) -> bool:
        """A tree opened before: its top is the group's, r-x (trees do not change)."""
        info = path.stat()
        return info.st_gid == self.gid and info.st_mode & 0o050 == 0o050

    def _readable(self, path: Path) -> None:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return
        mode = stat.S_IMODE(info.st_mode) & ~0o070
        mode |= 0o050 if stat.S_ISDIR(info.st_mode) else 0o040 | (0o010 if mode & 0o100 else 0)
        if info.st_gid != self.gid:
            os.chown(path, -1, self.gid, follow_symlinks=False)
        if stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)
