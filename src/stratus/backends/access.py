"""What replica users may reach on disk when each namespace runs as its own user: directories
private to one namespace; the few shared ones that only the *replicas group* may search (the
data dir, its ``run`` and ``logs``, the directories holding code and weights), never list; and
the code, weights and datasets themselves, readable by the namespaces that use them alone.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from stratus.backends.acl import R, allow_user, read_acl, read_perms, user_perms
from stratus.runtime.sandbox import Identity

# Top-level entries of the data dir that replica users must reach; the rest is closed to them.
REACHABLE = ("run", "logs", "builtin")


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


class Access:
    """Opens the server's own trees to replica users, one path at a time: search (not list) on
    the directories above what is granted, for the replicas group; read on the granted content
    itself (code, weights, datasets) for one namespace's user alone, by an ACL entry, so that
    one namespace cannot read another's even by naming its digest."""

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

    def grant(self, path: Path, uid: int, tree: bool = False, files: bool = False) -> None:
        """Let user ``uid`` reach ``path``: the replicas group may search each directory above
        it inside the server's trees; with ``tree``, the user may read all of it; with
        ``files``, the file and its integrity marker."""
        root = next((r for r in self.roots if path == r or r in path.parents), None)
        if root is not None:
            for directory in [root, *(p for p in reversed(path.parents) if root in p.parents)]:
                if not self._searchable(directory):
                    self.open_dir(directory)
        if files:
            for target in (path, Path(f"{path}.verified")):
                with contextlib.suppress(FileNotFoundError):
                    allow_user(target, uid, read_perms(target))
        elif tree and not user_perms(read_acl(path), uid) & R:
            # Bottom up, the top last: a tree whose top the user may read was granted whole.
            for top, subdirs, names in os.walk(path, topdown=False):
                for name in names:
                    self._readable(Path(top, name), uid)
                for name in subdirs:
                    self._readable(Path(top, name), uid)
            self._readable(path, uid)

    def _searchable(self, path: Path) -> bool:
        info = path.stat()
        return bool(info.st_mode & stat.S_IXOTH) or (info.st_gid == self.gid
                                                     and bool(info.st_mode & 0o010))

    @staticmethod
    def _readable(path: Path, uid: int) -> None:
        if not path.is_symlink():  # a link's target is granted on its own, if at all
            allow_user(path, uid, read_perms(path))
