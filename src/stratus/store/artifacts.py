"""Content-addressed blobs, encrypted at rest, and their plaintext where the server needs it.

A blob is addressed by the sha256 of its plaintext and stored sealed (``security.crypto``:
AES-256-GCM under a data key of its own) at ``blobs/sha256/<ab>/<digest>``; its data key,
wrapped by the master key, sits beside it in ``<digest>.key``, so a rotation rewrites only
those. Uploads are sealed as they stream in, to a temporary file renamed into place only
once the plaintext's digest checks out: a crash mid-upload leaves nothing half-written and
visible, and no plaintext reaches the artifact store. Replicas read plaintext from the
cache (``plaincache``, on the data disk or in memory): model files decrypted once and
verified, bundles unpacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from stratus.errors import BadRequest, IntegrityError, PayloadTooLarge
from stratus.resilience.disk import DiskHealth
from stratus.security.crypto import (
    PlainReader,
    Sealer,
    WrappedKey,
    new_data_key,
    open_segments,
    plaintext_size,
    read_header,
)
from stratus.security.masterkey import Keyring
from stratus.security.rotation import Rewrapped
from stratus.store.integrity import CorruptBlob, is_marked, mark
from stratus.store.plaincache import PlainCache, forget_pages
from stratus.store.sealed_keys import DIGEST, kids_in_use, rewrap, write_atomically

log = logging.getLogger("stratus.artifacts")


def sealed_blobs_exist(root: Path) -> bool:
    """Whether the artifact store at ``root`` holds blobs sealed under some master key."""
    return next((root / "blobs" / "sha256").glob("*/*.key"), None) is not None


class ArtifactStore:
    def __init__(self, root: Path, keyring: Keyring, plain: PlainCache) -> None:
        self.root = root
        self.keyring = keyring
        self.plain = plain
        self.disk = DiskHealth()  # the server's own is set in its place: /readyz reads it
        self.blobs = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        for directory in (self.blobs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        # digest -> (size, mtime_ns) of the sealed blob that the cached plaintext came from
        self._sources: dict[str, tuple[int, int]] = {}
        self.decrypted_bytes = 0  # plaintext written to the cache since the start, and the
        self.decrypt_seconds = 0.0  # time it took (/metrics; the model benchmark reads it)

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    # -- paths ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def key_path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / f"{digest}.key"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file() and self.key_path(digest).is_file()

    # -- reading ----------------------------------------------------------------------------
    def _data_key(self, digest: str, label: str) -> bytes:
        try:
            text = self.key_path(digest).read_text()
        except FileNotFoundError:
            raise CorruptBlob(f"{label} is corrupted: blob {digest[:12]} has lost its data key; "
                              "push it again") from None
        try:
            return self.keyring.unwrap(WrappedKey.from_json(text), digest)
        except IntegrityError as exc:  # a wrong master key is another error, raised as is
            raise CorruptBlob(f"{label} is corrupted: blob {digest[:12]} fails its integrity "
                              f"check ({exc.message}); push it again") from None

    def _segments(self, digest: str, label: str) -> Iterator[bytes]:
        """The blob's plaintext, a segment at a time, each authenticated before it is seen."""
        data_key = self._data_key(digest, label)
        try:
            handle = open(self.blob_path(digest), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise CorruptBlob(f"{label}: blob {digest[:12]} is missing from the artifact store") \
                from None
        with handle:
            try:
                yield from open_segments(handle, os.fstat(handle.fileno()).st_size, data_key, digest)
            except IntegrityError as exc:
                raise CorruptBlob(f"{label} is corrupted: blob {digest[:12]} fails its integrity "
                                  f"check ({exc.message}); push it again") from None

    @staticmethod
    def _check_plaintext(digest: str, size: int | None, label: str, actual: str | None,
                         length: int) -> None:
        if actual is not None and actual != digest:
            raise CorruptBlob(f"{label} is corrupted: blob {digest[:12]} decrypts to sha256 "
                              f"{actual[:12]}; push it again")
        if size is not None and length != size:
            raise CorruptBlob(f"{label} is corrupted: blob {digest[:12]} holds {length} bytes, "
                              f"expected {size}; push it again")

    def size_of(self, digest: str) -> int | None:
        """The plaintext's size, from the sealed file's; None when its header is damaged."""
        path = self.blob_path(digest)
        with open(path, "rb") as handle:
            try:
                _, segment, _ = read_header(handle)
            except IntegrityError:
                return None
            return plaintext_size(os.fstat(handle.fileno()).st_size, segment)

    def check_blob(self, digest: str, size: int | None, label: str) -> None:
        """Raise CorruptBlob unless the blob is whole: present with its data key, and
        decrypting to its digest (and to ``size`` bytes, if given). Decrypted once; a marker
        beside it (size, mtime) spares the work until the file changes."""
        path = str(self.blob_path(digest))
        if is_marked(path, digest, label) and self.key_path(digest).is_file():
            held = self.size_of(digest) if size is not None else None
            if held != size:
                raise CorruptBlob(f"{label}: blob {digest[:12]} holds {held} bytes, expected {size}")
            return
        stat = os.stat(path)
        hasher, length = hashlib.sha256(), 0
        for piece in self._segments(digest, label):
            hasher.update(piece)
            length += len(piece)
        self._check_plaintext(digest, size, label, hasher.hexdigest(), length)
        mark(path, digest, stat)

    def has_sound_blob(self, digest: str) -> bool:
        """Present and whole. A corrupted blob is removed, so that uploading the same content
        again repairs it (and every version that shares it). A blob sealed under a master key
        this server lacks is not corrupted: that error is raised, and the blob kept."""
        if not self.blob_path(digest).is_file():
            return False
        with self._lock(digest):
            try:
                self.check_blob(digest, None, f"blob {digest[:12]}")
            except CorruptBlob as exc:
                log.warning("removing a corrupted blob: %s", exc.message)
                self._remove(digest)
                return False
        return True

    def _remove(self, digest: str) -> None:
        path = self.blob_path(digest)
        for stale in (path, Path(f"{path}.verified"), self.key_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    # -- writing ----------------------------------------------------------------------------
    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Stream a blob to disk sealed, verify the plaintext against ``digest`` and publish it
        atomically."""
        hasher = hashlib.sha256()
        data_key = new_data_key()
        sealer = Sealer(data_key, digest)
        size = 0
        with self.disk.writing("artifacts"):  # a full disk: the 507, nothing published
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(sealer.header)
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > max_bytes:
                            raise PayloadTooLarge(f"bundle exceeds the limit of {max_bytes} bytes")
                        hasher.update(chunk)
                        tmp.write(sealer.update(chunk))
                    tmp.write(sealer.finish())
                    tmp.flush()
                    os.fsync(tmp.fileno())
                actual = hasher.hexdigest()
                if actual != digest:
                    raise BadRequest(f"upload digest mismatch: expected {digest}, got {actual}")
                await asyncio.to_thread(self.publish, digest, tmp_name, data_key)
                return size
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)  # still there only when the upload failed

    def publish(self, digest: str, sealed_file: str, data_key: bytes) -> None:
        """The data key first, then the blob: a blob is never visible without its key. A whole
        copy already there is kept (the new one is dropped: the content is stored once, and
        readers of it are not disturbed); a corrupted one is replaced, which repairs it."""
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(digest):
            try:
                if target.is_file():
                    self.check_blob(digest, None, f"blob {digest[:12]}")
                    return  # whole: the caller drops its copy
            except CorruptBlob as exc:
                log.warning("replacing a corrupted blob: %s", exc.message)
            with self.keyring.writing():
                write_atomically(self.key_path(digest), self.keyring.wrap(data_key, digest).to_json())
            os.replace(sealed_file, target)
            # Sealed from plaintext whose sha256 was checked: as verified as a full check makes it.
            mark(str(target), digest, os.stat(target))

    def read_blob(self, digest: str, label: str) -> bytes:
        """A small blob's whole plaintext (a job's checkpoint), each segment authenticated."""
        return b"".join(self._segments(digest, label))

    # -- plaintext for replicas -----------------------------------------------------------
    def plain_blob(self, digest: str, size: int | None, label: str) -> Path:
        """The blob's plaintext in the cache, decrypted and verified once, and again whenever
        the sealed blob has changed since (a repair, or damage to report)."""
        target = self.plain.blob_path(digest)
        source = self.blob_path(digest)
        with self._lock(digest):
            try:
                stat = os.stat(source)
            except FileNotFoundError:
                raise CorruptBlob(f"{label}: blob {digest[:12]} is missing from the artifact "
                                  "store") from None
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._sources.get(digest) == stamp and target.is_file():
                return target
            if digest not in self._sources and self._reusable(digest, target, label):
                self.plain.hold(digest)
                self._sources[digest] = stamp
                return target
            self._sources.pop(digest, None)
            self._drop_plain(digest)
            started = time.perf_counter()
            # No sha256 here (it would halve the speed of a start with large models): every
            # segment authenticated under this digest is what was sealed, and only plaintext
            # whose sha256 was this digest is ever sealed (write_blob, prepare).
            length, synced = self.plain.write(digest, self._segments(digest, label), lambda n: (
                self._check_plaintext(digest, size, label, None, n)))
            # Replicas check the plaintext against this marker: a stat, not a second hash.
            mark(str(target), digest, os.stat(target))
            mark(str(source), digest, stat)
            forget_pages(source)  # the ciphertext's page cache: read again only to decrypt again
            self.plain.hold(digest)
            self._sources[digest] = stamp
            took = time.perf_counter() - started
            self.decrypted_bytes += length
            self.decrypt_seconds += took
            log.info("decrypted %s (%.1f MiB) in %.3f s%s", label, length / (1 << 20), took,
                     f", of which {synced:.3f} s writing it to disk" if synced else "")
            return target

    def _reusable(self, digest: str, target: Path, label: str) -> bool:
        """A copy the server before a takeover decrypted (``PlainCache.open(keep=True)``):
        kept, with the mappings of the replicas it handed over, when neither it nor the sealed
        blob changed since each was verified (a stat each, as a replica's own check)."""
        if not target.is_file():
            return False
        try:
            return is_marked(str(target), digest, label) and \
                is_marked(str(self.blob_path(digest)), digest, label)
        except CorruptBlob:
            return False

    def _drop_plain(self, digest: str) -> None:
        self.plain.release(digest)
        target = self.plain.blob_path(digest)
        for stale in (target, Path(f"{target}.verified")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def drop_copy(self, digest: str) -> bool:
        """Free a decrypted copy's memory, unless a running job reads it; the next replica
        that needs it has it decrypted again (``plain_blob``)."""
        lock = self._lock(digest)
        if not lock.acquire(blocking=False):  # being decrypted: in use, and the caller is
            return False  # the event loop, which must not wait for it
        try:
            if self.plain.pinned(digest):
                return False
            self._sources.pop(digest, None)
            self._drop_plain(digest)
        finally:
            lock.release()
        return True

    def unpack_bundle(self, digest: str) -> Path:
        """Decrypt and extract a code bundle (tar.gz) once, verified, into the memory cache."""
        target = self.plain.bundles / digest
        if target.is_dir():
            return target
        if not self.has_blob(digest):
            raise BadRequest(f"bundle {digest} has not been uploaded")
        staging = Path(tempfile.mkdtemp(dir=self.plain.tmp, prefix="bundle-"))
        try:
            label = f"bundle {digest}"
            stream = PlainReader(self._segments(digest, label))
            try:
                # Stream mode: each piece is authenticated before tarfile sees it, and a
                # failure leaves only the staging directory, removed below.
                with tarfile.open(fileobj=stream, mode="r|gz") as archive:
                    # The "data" filter refuses absolute paths, links out of the tree and devices.
                    archive.extractall(staging, filter="data")
                actual = stream.drain()
            except CorruptBlob as exc:
                raise BadRequest(exc.message) from None
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BadRequest(f"bundle {digest} is not a valid tar.gz archive: {exc}") from None
            if actual != digest:
                raise BadRequest(f"bundle {digest} is corrupted: it decrypts to sha256 {actual}")
            try:
                os.replace(staging, target)
            except OSError:
                if not target.is_dir():  # another request may have won the race
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def model_dir(self, files: dict[str, dict[str, Any]]) -> Path:
        """A directory of links to a model version's plaintext blobs (``PlainCache``); call
        ``plain_blob`` for each first."""
        for relative in files:
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                raise BadRequest(f"model file path {relative!r} leaves its directory")
        return self.plain.model_dir(files)

    # -- garbage collection -----------------------------------------------------------------
    def collect(self, referenced: set[str], grace_s: float) -> tuple[list[str], int]:
        """Delete blobs nothing references (and older than ``grace_s``, so an upload whose
        version or deployment is being recorded right now survives), with what hangs off them.
        Returns the digests deleted and the bytes freed."""
        removed: list[str] = []
        freed = 0
        cutoff = time.time() - grace_s
        for path in list(self.blobs.glob("*/*")):
            digest = path.name.removesuffix(".key")
            if not DIGEST.fullmatch(digest) or digest in referenced:
                continue
            if path.name.endswith(".key") and path.with_name(digest).exists():
                continue  # goes with its blob
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # went with its blob
            if stat.st_mtime > cutoff:
                continue
            with self._lock(digest):
                self._remove(digest)
                self._drop_plain(digest)
                self._sources.pop(digest, None)
            if path.name == digest:
                removed.append(digest)
                freed += stat.st_size
        for bundle in self.plain.bundles.iterdir():
            if bundle.name not in referenced:
                shutil.rmtree(bundle, ignore_errors=True)
        for model in self.plain.models.iterdir():
            links = [link for link in model.rglob("*") if link.is_symlink()]
            if any(not link.exists() for link in links):
                shutil.rmtree(model, ignore_errors=True)
        return removed, freed

    # -- master key rotation ----------------------------------------------------------------
    def kids_in_use(self) -> set[str]:
        return kids_in_use(self.blobs)

    def rewrap(self, keyring: Keyring) -> Rewrapped:
        """Re-wrap every data key that the primary master key does not wrap yet."""
        return rewrap(self.blobs, keyring)
