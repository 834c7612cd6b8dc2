"""What namespace users must reach and how it is shown to them: the plan of covers (pure), the
ACL attribute's bytes, and, as root in forked children, a real private mount namespace."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from forked import in_child
from stratus.backends import acl
from stratus.backends.preflight import acl_problem
from stratus.runtime.reach import (
    CLONE_NEWNS,
    MS_PRIVATE,
    MS_REC,
    Need,
    covers,
    first_blocked,
    load_libc,
    python_needs,
    searchable,
)
from stratus.runtime.sandbox import Identity, become

USER = Identity(200071, 200071, (199999,))


def _mode(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 0, 0, 0, 0))


def test_search_is_decided_by_owner_then_group_then_others() -> None:
    gids = frozenset({199999})
    assert searchable(_mode(0o711), 5, gids)
    assert not searchable(_mode(0o700), 5, gids)
    assert searchable(_mode(0o710, gid=199999), 5, gids)
    assert not searchable(_mode(0o701, gid=199999), 5, gids)  # the group's bits decide
    assert not searchable(_mode(0o011, uid=5), 5, gids)  # and the owner's, for the owner
    assert searchable(_mode(0o100, uid=5), 5, gids)


def test_only_the_highest_blocked_directory_is_covered_showing_the_outermost_needs() -> None:
    blocked = {"/root", "/root/.pyenv", "/srv/closed"}

    def can_search(directory: str) -> bool:
        return directory not in blocked

    assert first_blocked("/root/.pyenv/versions/3.11.7", can_search) == "/root"
    assert first_blocked("/root", can_search) is None  # its own mode is not its parents'
    needs = [Need("/root/.pyenv/versions/3.11.7", True),
             Need("/root/.pyenv/versions/3.11.7/lib/python3.11", True),
             Need("/root/work/data", False), Need("/work/venv", True),
             Need("/srv/closed/app/src", True)]
    assert covers(needs, can_search) == {
        "/root": ["/root/.pyenv/versions/3.11.7", "/root/work/data"],
        "/srv/closed": ["/srv/closed/app/src"],
    }
    assert covers([Need("/work/venv", True)], can_search) == {}


def test_this_interpreter_needs_its_installation_and_its_real_path() -> None:
    paths = {need.path for need in python_needs()}
    assert os.path.realpath(sys.base_prefix) in paths and sys.prefix in paths
    assert str(Path(acl.__file__).parents[1]) in paths  # the stratus package
    assert all(need.listable and os.path.isabs(need.path) for need in python_needs())


def test_acl_bytes_follow_the_kernel_format() -> None:
    entries = acl.with_user(acl.from_mode(0o640), 200001, acl.R)
    data = acl.encode(entries)
    assert data[:4] == (2).to_bytes(4, "little") and (len(data) - 4) % 8 == 0
    decoded = acl.decode(data)
    assert decoded[(acl.USER_OBJ, acl.UNDEFINED)] == 6
    assert decoded[(acl.USER, 200001)] == acl.R
    assert decoded[(acl.MASK, acl.UNDEFINED)] == acl.R  # owning group r, the named user r
    tags = [int.from_bytes(data[4 + 8 * i:6 + 8 * i], "little") for i in range(len(decoded))]
    assert tags == sorted(tags)
    both = acl.with_user(acl.with_user(decoded, 200002, acl.R | acl.X), 200001, acl.X)
    assert acl.user_perms(both, 200001) == acl.R | acl.X
    assert acl.decode(acl.encode(both))[(acl.MASK, acl.UNDEFINED)] == acl.R | acl.X
    assert (acl.MASK, acl.UNDEFINED) not in acl.decode(acl.encode(acl.from_mode(0o600)))
    with pytest.raises(ValueError, match="POSIX ACL"):
        acl.decode(b"\x01\x00\x00\x00")


# -- as root, for real -----------------------------------------------------------------------
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root makes mount namespaces")


def _outcome(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


@pytest.fixture
def closed_home() -> Iterator[Path]:
    """/tmp/x (0711)/home (0700, as /root) holding an installation, a nested closed directory
    with a needed path inside, and a secret."""
    base = Path(tempfile.mkdtemp())
    base.chmod(0o711)
    home = base / "home"
    (home / "python" / "lib").mkdir(parents=True)
    (home / "python" / "lib" / "mod.py").write_text("x = 1\n")
    (home / "python" / "private" / "inner").mkdir(parents=True)
    (home / "python" / "private" / "inner" / "data.txt").write_text("needed")
    (home / "python" / "private").chmod(0o700)
    (home / "secret.txt").write_text("root's")
    for directory in (home / "python", home / "python" / "lib"):
        directory.chmod(0o755)
    (home / "python" / "lib" / "mod.py").chmod(0o644)
    (home / "python" / "private" / "inner" / "data.txt").chmod(0o644)
    (home / "python" / "private" / "inner").chmod(0o755)
    home.chmod(0o700)
    yield home
    shutil.rmtree(base)


@root_only
def test_a_private_view_shows_only_what_is_needed_and_leaves_the_host_alone(
        closed_home: Path) -> None:
    python, inner = closed_home / "python", closed_home / "python" / "private" / "inner"
    mounts_before = Path("/proc/self/mountinfo").read_text()

    def body() -> dict[str, Any]:
        become(USER, [Need(str(python), True), Need(str(inner), True)])
        return {
            "uid": os.getuid(),
            "module": _outcome(lambda: (python / "lib" / "mod.py").read_text()),
            "nested": _outcome(lambda: (inner / "data.txt").read_text()),
            "listing": sorted(os.listdir(closed_home)),
            "secret": _outcome(lambda: (closed_home / "secret.txt").read_text()),
            "write": _outcome(lambda: (closed_home / "new").write_text("x")),
        }

    seen = in_child(body)
    assert seen == {"uid": USER.uid, "module": "ok", "nested": "ok", "listing": ["python"],
                    "secret": "ENOENT", "write": "EROFS"}, seen
    # The host's view is untouched: the same mounts, the secret still there, /root-like 0700.
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert (closed_home / "secret.txt").read_text() == "root's"
    assert stat.S_IMODE(closed_home.stat().st_mode) == 0o700


@root_only
def test_a_need_that_stays_out_of_reach_is_refused_by_name(closed_home: Path) -> None:
    (closed_home / "python" / "lib").chmod(0o700)  # the need itself: nothing a cover can fix
    seen = in_child(lambda: become(USER, [Need(str(closed_home / "python" / "lib"), True)])
                     or {"entered": True})
    assert "SandboxError" in seen["error"], seen
    assert f"{closed_home / 'python' / 'lib'} is out of reach" in seen["error"]
    assert "mode 0700" in seen["error"]


@root_only
def test_a_cache_on_a_file_system_without_acls_is_refused(tmp_path: Path) -> None:
    def body() -> dict[str, Any]:
        libc = load_libc()
        assert libc.unshare(CLONE_NEWNS) == 0
        assert libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
        assert libc.mount(b"none", str(tmp_path).encode(), b"ramfs", 0, None) == 0  # no xattrs
        return {"ramfs": acl_problem(tmp_path / "stratus-0" / "cache", USER.uid),
                "tmpfs": acl_problem(Path("/dev/shm/stratus-0/cache"), USER.uid)}

    seen = in_child(body)
    assert seen["ramfs"] == f"{tmp_path} holds no POSIX ACLs (Operation not supported): " \
        "mount it with ACL support", seen
    assert seen["tmpfs"] is None
