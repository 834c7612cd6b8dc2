"""The sealed artifact store and the secret store on real files and a real SQLite database:
plaintext only in the cache, damage caught and never served, rotation that re-wraps data
keys without touching a blob, and a rotation cut short that finishes at the next start."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from stratus.errors import BadRequest, Conflict, IntegrityError, NotFound
from stratus.security.crypto import HEADER_SIZE, SEGMENT, TAG, WrappedKey
from stratus.security.masterkey import (
    KEY_FILE,
    MASTER_KEY_ENV,
    NEXT_KEY_FILE,
    Keyring,
    MasterKey,
    MasterKeyError,
    begin_file_rotation,
    load_keyring,
)
from stratus.security.rotation import check_keys, rotate_master, settle
from stratus.store.artifacts import ArtifactStore, sealed_blobs_exist
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.integrity import CorruptBlob, verify_blob
from stratus.store.legacy import seal_legacy
from stratus.store.plaincache import SHM, PlainCache, artifacts_config, cache_root
from stratus.store.secrets import SecretRow, SecretStore

MARKER = b"plaintext-marker-" + os.urandom(8).hex().encode()


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def put(store: ArtifactStore, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    assert asyncio.run(store.write_blob(digest, _chunks(data), 1 << 30)) == len(data)
    return digest


def open_store(data_dir: Path, keyring: Keyring | None = None) -> ArtifactStore:
    plain = PlainCache(data_dir.parent / f"{data_dir.name}-plain")
    plain.open()
    return ArtifactStore(data_dir / "artifacts", keyring or load_keyring(data_dir, environ={}), plain)


def files_under(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            yield Path(directory) / name


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield engine
    engine.dispose()


def test_a_blob_is_sealed_on_the_way_in_and_plain_only_in_the_cache(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = open_store(data_dir)
    data = os.urandom(3 << 20) + MARKER + os.urandom(1000)
    digest = put(store, data)
    assert store.has_blob(digest) and store.has_sound_blob(digest)
    assert sealed_blobs_exist(store.root)
    for path in files_under(data_dir):
        content = path.read_bytes()
        assert MARKER not in content and data[:4096] not in content, path
    assert WrappedKey.from_json(store.key_path(digest).read_text()).kid == store.keyring.primary.kid
    store.check_blob(digest, len(data), "m@1.0.0 (w)")
    with pytest.raises(CorruptBlob, match=f"holds {len(data)} bytes, expected 5"):
        store.check_blob(digest, 5, "m@1.0.0 (w)")

    plain = store.plain_blob(digest, len(data), "m@1.0.0 (w)")
    assert plain.parent == store.plain.blobs and plain.read_bytes() == data
    assert oct(plain.stat().st_mode & 0o777) == "0o400"
    verify_blob(str(plain), digest, len(data), "w")  # a replica's check: the marker matches
    assert store.plain_blob(digest, len(data), "w") == plain  # cached: not decrypted again
    links = store.model_dir({"sub/w.bin": {"sha256": digest, "size": len(data)}})
    assert (links / "sub" / "w.bin").read_bytes() == data


def test_stored_bytes_uploaded_again_are_kept_as_they_are_unless_damaged(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    data = os.urandom(3 << 20)
    digest = put(store, data)
    blob = store.blob_path(digest)
    before, sealed, key = blob.stat(), blob.read_bytes(), store.key_path(digest).read_text()
    assert put(store, data) == digest  # received, sealed and hashed whole, then dropped
    after = blob.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert blob.read_bytes() == sealed and store.key_path(digest).read_text() == key
    assert list(store.tmp.iterdir()) == []
    flip(blob, blob.stat().st_size // 2)
    assert put(store, data) == digest  # a damaged copy is replaced: the upload repairs it
    assert blob.read_bytes() != sealed and store.has_sound_blob(digest)
    assert store.plain_blob(digest, len(data), "w").read_bytes() == data


def test_damage_is_caught_and_never_served(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    data = os.urandom(2 << 20)
    digest = put(store, data)
    store.plain_blob(digest, len(data), "m@1 (w)")
    blob = store.blob_path(digest)
    flip(blob, blob.stat().st_size // 2)
    # The sealed blob changed since its plaintext was cached: decrypted again, and refused.
    with pytest.raises(CorruptBlob, match=rf"m@1 \(w\) is corrupted: blob {digest[:12]} fails its "
                                          r"integrity check \(segment 1 of 2 fails authentication\)"):
        store.plain_blob(digest, len(data), "m@1 (w)")
    assert not store.plain.blob_path(digest).exists()
    # HEAD's check removes it, so that an upload repairs it.
    assert not store.has_sound_blob(digest)
    assert not blob.exists() and not store.key_path(digest).exists()
    digest = put(store, data)
    assert store.plain_blob(digest, len(data), "w").read_bytes() == data

    store.key_path(digest).unlink()
    with pytest.raises(CorruptBlob, match="has lost its data key"):
        store.check_blob(digest, None, "w")
    digest = put(store, data)
    with open(blob, "r+b") as handle:
        handle.truncate(blob.stat().st_size - 1)
    with pytest.raises(CorruptBlob, match="segment 2 of 2 fails authentication"):
        store.check_blob(digest, None, "w")
    with open(blob, "r+b") as handle:
        handle.truncate(HEADER_SIZE + SEGMENT + TAG + 5)  # too short for a last segment's tag
    with pytest.raises(CorruptBlob, match="truncated or padded"):
        store.check_blob(digest, None, "w")


def _bundle(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_a_bundle_unpacks_from_ciphertext_and_refuses_damage(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    source = b"MARKER = %r\n" % MARKER + os.urandom(200_000).hex().encode()
    digest = put(store, _bundle({"app.py": source, "pkg/data.bin": os.urandom(3 << 20)}))
    unpacked = store.unpack_bundle(digest)
    assert unpacked.parent == store.plain.bundles
    assert (unpacked / "app.py").read_bytes() == source

    damaged = put(store, _bundle({"app.py": source + b"# other"}))
    blob = store.blob_path(damaged)
    flip(blob, blob.stat().st_size - 3)
    with pytest.raises(BadRequest, match=f"bundle {damaged} is corrupted: blob {damaged[:12]} fails "
                                         "its integrity check"):
        store.unpack_bundle(damaged)
    assert not (store.plain.bundles / damaged).exists()
    assert list(store.plain.tmp.iterdir()) == []
    with pytest.raises(BadRequest, match="has not been uploaded"):
        store.unpack_bundle("0" * 64)


def _stamps(store: ArtifactStore, digests: list[str]) -> dict[str, tuple[bytes, int]]:
    return {d: (store.blob_path(d).read_bytes(), store.blob_path(d).stat().st_mtime_ns) for d in digests}


def test_rotation_rewraps_every_data_key_and_leaves_the_blobs_alone(tmp_path: Path,
                                                                     engine: Engine) -> None:
    data_dir = tmp_path / "data"
    store = open_store(data_dir)
    keyring = store.keyring
    secrets = SecretStore(engine, keyring)
    stores = {"artifacts": store, "secrets": secrets}
    blobs = {put(store, os.urandom(size)): size for size in (10, 1 << 20, 3 << 20)}
    secrets.put("team-a", "token", "s3cr3t")
    before = _stamps(store, list(blobs))
    old = keyring.primary
    old_file = (data_dir / KEY_FILE).read_text()

    report = rotate_master(keyring, stores)

    new = keyring.primary
    assert new.kid != old.kid and keyring.kids == [new.kid]
    assert report["master_key_id"] == new.kid and report["retired_key_ids"] == [old.kid]
    assert report["rewrapped"] == {"artifacts": 3, "secrets": 1} and report["unreadable"] == []
    assert (data_dir / KEY_FILE).read_text() != old_file
    assert MasterKey.parse((data_dir / KEY_FILE).read_text(), "key") == new
    assert oct((data_dir / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert not (data_dir / NEXT_KEY_FILE).exists()
    assert _stamps(store, list(blobs)) == before, "no blob was rewritten or touched"
    assert store.kids_in_use() == {new.kid} and secrets.kids_in_use() == {new.kid}
    # Everything still opens under the new key, in a fresh server as in this one.
    fresh = open_store(data_dir, load_keyring(data_dir, environ={}))
    for digest, size in blobs.items():
        assert len(fresh.plain_blob(digest, size, "w").read_bytes()) == size
    assert SecretStore(engine, fresh.keyring).reveal("team-a", {"TOKEN": "token"}) == {"TOKEN": "s3cr3t"}
    with pytest.raises(MasterKeyError, match=f"under master key {new.kid}"):
        SecretStore(engine, Keyring([old], "file", None)).reveal("team-a", {"TOKEN": "token"})
    assert rotate_master(keyring, stores)["rewrapped"] == {"artifacts": 3, "secrets": 1}


def test_an_interrupted_rotation_finishes_at_the_next_start(tmp_path: Path, engine: Engine) -> None:
    data_dir = tmp_path / "data"
    store = open_store(data_dir)
    secrets = SecretStore(engine, store.keyring)
    first = put(store, b"first")
    secrets.put("default", "a", "value-a")
    old = store.keyring.primary
    new = begin_file_rotation(store.keyring)  # the next key is on disk ...
    second = put(store, b"second")  # ... and wraps what is written from now on; then a crash
    assert store.kids_in_use() == {old.kid, new.kid}

    restarted = load_keyring(data_dir, environ={})
    assert restarted.kids == [new.kid, old.kid]
    stores = {"artifacts": open_store(data_dir, restarted), "secrets": SecretStore(engine, restarted)}
    settle(restarted, stores)
    assert restarted.kids == [new.kid] and not (data_dir / NEXT_KEY_FILE).exists()
    assert load_keyring(data_dir, environ={}).kids == [new.kid]
    assert store.kids_in_use() == {new.kid} and secrets.kids_in_use() == {new.kid}
    opened = stores["artifacts"]
    assert isinstance(opened, ArtifactStore)
    assert opened.plain_blob(first, 5, "w").read_bytes() == b"first"
    assert opened.plain_blob(second, 6, "w").read_bytes() == b"second"


def test_rotation_with_keys_from_the_environment(tmp_path: Path, engine: Engine) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    environ = {MASTER_KEY_ENV: old.encoded()}
    store = open_store(tmp_path / "data", load_keyring(tmp_path / "data", environ=environ))
    secrets = SecretStore(engine, store.keyring)
    digest = put(store, b"weights")
    secrets.put("default", "a", "value-a")
    with pytest.raises(Conflict, match=r"STRATUS_MASTER_KEY=NEW,OLD"):
        rotate_master(store.keyring, {"artifacts": store, "secrets": secrets})

    restarted = load_keyring(tmp_path / "data", environ={MASTER_KEY_ENV: f"{new.encoded()},{old.encoded()}"})
    stores = {"artifacts": open_store(tmp_path / "data", restarted),
              "secrets": SecretStore(engine, restarted)}
    report = rotate_master(restarted, stores)
    assert report["rewrapped"] == {"artifacts": 1, "secrets": 1}
    assert report["retired_key_ids"] == [old.kid] and "remove the retired key" in report["next_step"]
    assert not (tmp_path / "data" / KEY_FILE).exists()
    only_new = load_keyring(tmp_path / "data", environ={MASTER_KEY_ENV: new.encoded()})
    check_keys(only_new, stores)
    assert open_store(tmp_path / "data", only_new).plain_blob(digest, 7, "w").read_bytes() == b"weights"


def test_a_start_with_the_wrong_master_key_is_refused(tmp_path: Path, engine: Engine) -> None:
    store = open_store(tmp_path / "data")
    put(store, b"weights")
    wrong = Keyring([MasterKey.generate()], "env", None)
    with pytest.raises(MasterKeyError, match=f"encrypted under master key {store.keyring.primary.kid}"):
        check_keys(wrong, {"artifacts": store, "secrets": SecretStore(engine, wrong)})
    with pytest.raises(ValueError, match="no master key"):  # and none is generated over it
        (tmp_path / "data" / KEY_FILE).unlink()
        load_keyring(tmp_path / "data", environ={}, encrypted_data=sealed_blobs_exist(store.root))


def test_blobs_from_before_encryption_are_sealed_at_start(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    data = os.urandom(1 << 20) + MARKER
    digest = hashlib.sha256(data).hexdigest()
    legacy = store.blob_path(digest)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_bytes(data)
    rotten = store.blob_path("ab" + "0" * 62)
    rotten.parent.mkdir(parents=True, exist_ok=True)
    rotten.write_bytes(b"does not match its name")
    (store.root / "bundles" / "old").mkdir(parents=True)
    (store.root / "bundles" / "old" / "app.py").write_bytes(MARKER)
    assert seal_legacy(store) == 1
    assert MARKER not in legacy.read_bytes() and not (store.root / "bundles").exists()
    assert store.plain_blob(digest, len(data), "w").read_bytes() == data
    assert not store.has_sound_blob("ab" + "0" * 62) and not rotten.exists()


def test_secrets_are_sealed_bound_to_their_name_and_never_listed(engine: Engine, tmp_path: Path) -> None:
    keyring = load_keyring(tmp_path, environ={})
    secrets = SecretStore(engine, keyring)
    info, created = secrets.put("team-a", "db-password", MARKER.decode())
    assert created and info.name == "db-password"
    again, created = secrets.put("team-a", "db-password", "rotated")
    assert not created and again.created_at == info.created_at and again.updated_at >= info.updated_at
    secrets.put("team-b", "db-password", "other")
    assert [i.name for i in secrets.infos("team-a")] == ["db-password"]
    assert secrets.missing("team-a", {"db-password", "nope"}) == ["nope"]
    assert secrets.reveal("team-a", {"DB": "db-password"}) == {"DB": "rotated"}
    with pytest.raises(NotFound, match=r"secret 'nope' \(for \$X\) is not set in namespace 'team-a'"):
        secrets.reveal("team-a", {"X": "nope"})
    # A row's ciphertext copied under another namespace does not open there.
    with engine.begin() as connection:
        row = connection.execute(SecretRow.__table__.select().where(
            SecretRow.namespace == "team-a")).one()
        connection.execute(update(SecretRow).where(SecretRow.namespace == "team-b").values(
            wrapped_key=row.wrapped_key, ciphertext=row.ciphertext))
    with pytest.raises(IntegrityError, match="secret 'db-password' fails its integrity check"):
        secrets.reveal("team-b", {"DB": "db-password"})
    assert MARKER not in (tmp_path / "stratus.db").read_bytes()
    assert secrets.delete("team-a", "db-password") and not secrets.delete("team-a", "db-password")
    assert base64.b64encode(keyring.primary.secret) not in (tmp_path / "stratus.db").read_bytes()


_MAP_AND_MEASURE = """
import mmap, sys
from stratus.runtime.memory import read_memory
before = read_memory().charged
with open(sys.argv[1], "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)  # as safetensors loading
total = sum(mapped[offset] for offset in range(0, len(mapped), 4096))
print(read_memory().charged - before)
"""


def _charged(path: Path) -> int:
    """What a fresh process that maps ``path`` as a replica does is charged for (its own
    written memory, ``Memory.charged``) once it touched every page."""
    return int(subprocess.run([sys.executable, "-c", _MAP_AND_MEASURE, str(path)],
                              capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm")
def test_a_lone_replica_is_not_charged_for_the_weights_it_maps_in_memory(tmp_path: Path) -> None:
    """tmpfs pages are dirty: mapped by one process alone, they would count as memory it
    wrote. The server's own mapping makes them shared, as a disk file's pages would be."""
    data_dir = tmp_path / "data"
    plain = PlainCache(cache_root(data_dir, "memory"), "memory")
    plain.open()
    try:
        assert plain.in_memory
        store = ArtifactStore(data_dir / "artifacts", load_keyring(data_dir, environ={}), plain)
        size = 32 << 20
        digest = put(store, os.urandom(size))
        path = store.plain_blob(digest, size, "w")
        assert plain.resident() == {digest: size}  # tmpfs: charged by the host budget
        assert _charged(path) < size // 8
        plain.release(digest)
        assert _charged(path) >= 0.9 * size, "without the server's mapping, they would be charged"
    finally:
        plain.close()
    assert not plain.root.exists()


def test_a_lone_replica_is_not_charged_for_the_weights_it_maps_on_disk(tmp_path: Path) -> None:
    """A copy on disk is written back before it is published: its pages are clean page cache,
    shared with nobody yet not the replica's own (pages not yet written back would count as
    its own dirty memory, as tmpfs pages do)."""
    data_dir = tmp_path / "data"
    plain = PlainCache(cache_root(data_dir))
    plain.open()
    try:
        assert plain.root == data_dir / "run" / "plain" and not plain.in_memory
        store = ArtifactStore(data_dir / "artifacts", load_keyring(data_dir, environ={}), plain)
        size = 32 << 20
        digest = put(store, os.urandom(size))
        path = store.plain_blob(digest, size, "w")
        assert stat.S_IMODE(path.stat().st_mode) == 0o400 and path.stat().st_uid == os.getuid()
        assert stat.S_IMODE(plain.root.stat().st_mode) == 0o700
        assert plain.resident() == {} and plain.sizes() == {digest: size}  # page cache
        assert _charged(path) < size // 8
    finally:
        plain.close()
    assert not plain.root.exists()


def test_the_artifacts_section_says_where_the_copies_go(tmp_path: Path) -> None:
    assert artifacts_config({}).plaintext == "disk"
    assert artifacts_config({"plaintext": "memory"}).plaintext == "memory"
    with pytest.raises(ValueError, match="artifacts: plaintext: Input should be 'disk' or 'memory'"):
        artifacts_config({"plaintext": "tape"})
    with pytest.raises(ValueError, match="artifacts: where: Extra inputs are not permitted"):
        artifacts_config({"where": "disk"})
    data_dir = tmp_path / "data"
    assert cache_root(data_dir) == cache_root(data_dir, "disk") == data_dir / "run" / "plain"
    shm = tmp_path / "shm"
    shm.mkdir()
    assert cache_root(data_dir, "memory", shm).parent == shm / f"stratus-{os.getuid()}"
    assert cache_root(data_dir, "memory", tmp_path / "no-shm") == data_dir / "run" / "plain"
