"""What a namespace's processes must reach on disk (the Python installation, the server's trees),
and the private mount namespace that shows it to them where the host keeps it out of their
reach (Python under /root, mode 0700), without opening anything on the host.

A revision zygote, still root, calls ``private_view`` just before it drops to its namespace's
user. In a mount namespace of its own (private: nothing propagates back to the host), each
highest directory that user could not search is covered by a small read-only tmpfs holding
bind mounts of only the needed paths below it, at the same paths, so ``__file__``, package
paths, a later ``dlopen`` and a subprocess of ``sys.executable`` all still work. The replicas
and job workers it forks inherit the view. unshare(2) and mount(2) are reached through ctypes,
the glue: Python 3.11's ``os`` has neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
_COVER_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
_COVER_OPTIONS = b"mode=0755,size=64k"
_ROUNDS = 4  # a needed path may hold another blocked directory above a deeper need


@dataclass(frozen=True)
class Need:
    """A path a namespace's processes must reach: read and list it (Python's files), or only
    search it (the server's trees, whose own permissions the server sets)."""

    path: str
    listable: bool


def python_needs() -> list[Need]:
    """What this interpreter may still read after a fork: its prefixes and their real paths (a
    venv's python links into the base installation), each existing ``sys.path`` entry (not
    the unsafe first one, which zygotes, started with ``-P``, do not have), and the stratus
    package itself (an editable install's may lie outside ``sys.path``)."""
    entries = sys.path if sys.flags.safe_path else sys.path[1:]
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), *entries, str(Path(__file__).parents[1])]
    paths: dict[str, None] = {}
    for path in found:
        if path and os.path.isabs(path) and os.path.exists(path):
            paths.setdefault(os.path.normpath(path))
            paths.setdefault(os.path.realpath(path))
    return [Need(path, True) for path in paths]


# -- planning (pure but for the stat it is given) --------------------------------------------
def searchable(info: os.stat_result, uid: int, gids: frozenset[int]) -> bool:
    """Whether a user may search a directory, by its mode bits (owner, else group, else
    others). An ACL can only make this wrong one way, counted as blocked: a cover then shows
    what was reachable anyway."""
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def first_blocked(path: str, can_search: Callable[[str], bool]) -> str | None:
    """The highest directory above ``path`` that the user cannot search, if any."""
    for directory in reversed(Path(path).parents):
        if not can_search(str(directory)):
            return str(directory)
    return None


def covers(needs: Iterable[Need], can_search: Callable[[str], bool]) -> dict[str, list[str]]:
    """The directories to cover, each with the paths to show in it: the outermost of the needs
    it blocks (a need inside another is shown with it)."""
    blocked: dict[str, set[str]] = {}
    for need in needs:
        directory = first_blocked(need.path, can_search)
        if directory is not None:
            blocked.setdefault(directory, set()).add(need.path)
    return {directory: sorted(p for p in paths if not any(Path(o) in Path(p).parents
                                                          for o in paths))
            for directory, paths in sorted(blocked.items())}


def user_can_search(uid: int, gids: frozenset[int]) -> Callable[[str], bool]:
    """The search test of ``covers`` for a user, reading each directory's mode once."""
    seen: dict[str, bool] = {}

    def check(directory: str) -> bool:
        if directory not in seen:
            try:
                seen[directory] = searchable(os.stat(directory), uid, gids)
            except OSError:
                seen[directory] = True  # missing: nothing to cover (the need is skipped)
        return seen[directory]

    return check


# -- in the zygote, as root ------------------------------------------------------------------
def private_view(needs: list[Need], uid: int, gids: frozenset[int]) -> int:
    """Give this process a mount namespace in which the user reaches every need; the number of
    directories covered (0: nothing was out of reach, and no namespace was made). OSError
    says what the kernel refused (without CAP_SYS_ADMIN: unshare)."""
    covered = 0
    for _ in range(_ROUNDS):
        plan = covers(needs, user_can_search(uid, gids))
        if not plan:
            break
        if not covered:
            _own_namespace()
        for directory, paths in plan.items():
            _cover(directory, paths)
        covered += len(plan)
    return covered


def _own_namespace() -> None:
    _call("unshare", "unshare(CLONE_NEWNS)", CLONE_NEWNS)
    # Private, recursively: nothing mounted here reaches the host, nor the host's later mounts us.
    _call("mount", "making / private", None, b"/", None, MS_REC | MS_PRIVATE, None)


def _cover(directory: str, paths: list[str]) -> None:
    """Mount a tmpfs over ``directory`` showing only ``paths``: each is opened (O_PATH) before
    the cover hides it, then bound from /proc/self/fd onto an empty point at its own path."""
    opened = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in paths]
    try:
        _call("mount", f"a tmpfs over {directory}", b"stratus-view", directory.encode(),
              b"tmpfs", _COVER_FLAGS, _COVER_OPTIONS)
        for path, fd in opened:
            _make_point(directory, path, stat.S_ISDIR(os.fstat(fd).st_mode))
            _call("mount", f"showing {path}", f"/proc/self/fd/{fd}".encode(), path.encode(),
                  None, MS_BIND | MS_REC, None)
        _call("mount", f"making the cover of {directory} read-only", None, directory.encode(),
              None, MS_REMOUNT | MS_RDONLY | _COVER_FLAGS, None)
    finally:
        for _, fd in opened:
            os.close(fd)


def _make_point(cover: str, path: str, is_dir: bool) -> None:
    """The directories from ``cover`` down to ``path`` (0755: a umask must not close them) and
    ``path`` itself, an empty directory or file for the bind mount to land on."""
    for directory in [*reversed(Path(path).parents), Path(path)]:
        if Path(cover) not in directory.parents or (directory == Path(path) and not is_dir):
            continue
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            directory.chmod(0o755)
    if not is_dir:
        Path(path).touch()


_libc: ctypes.CDLL | None = None


def load_libc() -> ctypes.CDLL:
    """libc's handle, loaded once: call it before forking a process that has threads, so the
    child need not dlopen (which takes a lock another thread may have held at the fork)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_char_p]
        _libc.unshare.argtypes = [ctypes.c_int]
    return _libc


def _call(name: str, what: str, *args: object) -> None:
    if getattr(load_libc(), name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


# -- after the drop --------------------------------------------------------------------------
def unreachable(needs: Iterable[Need], parents_only: bool = False) -> str | None:
    """Why this process (now the namespace's user) cannot reach one of ``needs``, if it cannot.
    With ``parents_only`` a search need's own directory is not checked (the server opens it
    later)."""
    for need in needs:
        path = Path(need.path)
        for directory in reversed(path.parents):
            if not os.access(directory, os.X_OK):
                return f"{need.path} is out of reach: {_describe(directory)}"
        if need.listable:
            wanted = os.R_OK | (os.X_OK if path.is_dir() else 0)
        else:
            wanted = 0 if parents_only else os.X_OK
        if wanted and not os.access(path, wanted):
            return f"{need.path} is out of reach: {_describe(path)}"
    return None


def _describe(path: Path) -> str:
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return f"{path} is mode {stat.S_IMODE(info.st_mode):04o}"


def describe_blocked(plan: Mapping[str, list[str]]) -> str:
    """The first cover of a plan, for an operator: what is out of reach and why."""
    directory, paths = next(iter(plan.items()))
    return f"{paths[0]} is out of their reach: {_describe(Path(directory))}"
