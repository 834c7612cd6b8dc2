"""The start-up check that replicas can run as unprivileged users on this host: a short-lived
child of the server does what a revision zygote will (the private view of the file system if
Python is out of their reach, the drop to such a user) and reports what it could not reach;
and the plaintext cache's file system must hold the ACLs that grant content per namespace.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from stratus.backends.acl import R, allow_user
from stratus.runtime.reach import (
    Need,
    covers,
    describe_blocked,
    load_libc,
    python_needs,
    user_can_search,
)
from stratus.runtime.sandbox import Identity, SandboxError, become
from stratus.store.plaincache import SHM

_REPORT_BYTES = 4096


def namespace_users_problem(identity: Identity, data_dir: Path, cache: Path) -> str | None:
    """Why ``identity`` could not run replicas of the server on ``data_dir`` (whose decrypted
    artifacts go to ``cache``), or None. The server's trees are checked up to the directories
    the server opens to replica users itself."""
    shared = [data_dir.resolve().parent]
    if SHM in cache.parents:
        shared.append(SHM)
    needs = [*python_needs(), *(Need(str(path), False) for path in shared)]
    problem = _in_child(identity, needs)
    if problem is not None:
        plan = covers(needs, user_can_search(identity.uid,
                                             frozenset((identity.gid, *identity.groups))))
        return f"{describe_blocked(plan)}, and {problem}" if plan else problem
    return acl_problem(cache, identity.uid)


def _in_child(identity: Identity, needs: list[Need]) -> str | None:
    """Fork, become ``identity`` as a zygote would, and say what failed. The server may have
    threads by now (its log writers): the child takes no lock they may hold, as it only makes
    system calls (libc loaded before the fork) and writes to its pipe before it exits."""
    load_libc()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                become(identity, needs, parents_only=True)
            except SandboxError as exc:
                os.write(write_end, str(exc).encode()[:_REPORT_BYTES])
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        text = report.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return text or None


def acl_problem(cache: Path, uid: int) -> str | None:
    """Content is granted per namespace by ACL entries, in the cache (code, weights, datasets):
    its file system must support them."""
    where = next((p for p in (cache, *cache.parents) if p.is_dir()), Path("/"))
    handle, probe = tempfile.mkstemp(prefix=".stratus-acl-", dir=where)
    os.close(handle)
    try:
        allow_user(Path(probe), uid, R)
    except OSError as exc:
        return f"{where} holds no POSIX ACLs ({exc.strerror}): mount it with ACL support"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None
