"""The master key: generated once into a 0600 file, or taken from the environment (one key, or
NEW,OLD during a rotation); a keyring names the keys it lacks."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from stratus.security.crypto import new_data_key
from stratus.security.masterkey import (
    KEY_FILE,
    MASTER_KEY_ENV,
    NEXT_KEY_FILE,
    Keyring,
    MasterKey,
    MasterKeyError,
    load_keyring,
)


def encoded(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_first_start_generates_a_private_key_file_and_says_where(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "stratus.security"):
        keyring = load_keyring(tmp_path, environ={})
    path = tmp_path / KEY_FILE
    assert keyring.key_file == path and keyring.source == "file"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == keyring.primary.secret
    assert f"generated the master key {keyring.primary.kid} in {path}" in caplog.text
    assert keyring.primary.encoded() not in caplog.text
    again = load_keyring(tmp_path, environ={})  # the next start reads the same key
    assert again.primary == keyring.primary and again.kids == [keyring.primary.kid]


def test_no_key_is_generated_over_encrypted_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds encrypted artifacts or secrets but no master key"):
        load_keyring(tmp_path, environ={}, encrypted_data=True)
    assert not (tmp_path / KEY_FILE).exists()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_keyring(tmp_path, environ={})
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_keyring(tmp_path, environ={})


def test_keys_from_the_environment(tmp_path: Path) -> None:
    new, old = new_data_key(), new_data_key()
    keyring = load_keyring(tmp_path, environ={MASTER_KEY_ENV: f"{encoded(new)}, {encoded(old)}"})
    assert keyring.source == "env" and keyring.key_file is None
    assert [k.secret for k in keyring.keys] == [new, old]  # the first wraps
    assert not (tmp_path / KEY_FILE).exists()
    with pytest.raises(ValueError, match="not base64"):
        load_keyring(tmp_path, environ={MASTER_KEY_ENV: "not base64!"})
    with pytest.raises(ValueError, match="base64 of 32 random bytes"):
        load_keyring(tmp_path, environ={MASTER_KEY_ENV: encoded(b"short")})


def test_an_interrupted_rotation_wraps_with_its_new_key(tmp_path: Path) -> None:
    old = load_keyring(tmp_path, environ={}).primary
    new = MasterKey.generate()
    path = tmp_path / NEXT_KEY_FILE
    path.write_text(new.encoded())
    path.chmod(0o600)
    keyring = load_keyring(tmp_path, environ={})
    assert keyring.kids == [new.kid, old.kid]


def test_a_keyring_unwraps_by_id_and_names_what_it_lacks(tmp_path: Path) -> None:
    first, second = MasterKey.generate(), MasterKey.generate()
    assert first.kid != second.kid and len(first.kid) == 8
    assert first.secret.hex() not in repr(first)
    writer = Keyring([first], "file", tmp_path / KEY_FILE)
    data_key = new_data_key()
    wrapped = writer.wrap(data_key, "obj")
    assert wrapped.kid == first.kid
    reader = Keyring([second, first], "env", None)
    assert reader.unwrap(wrapped, "obj") == data_key
    with pytest.raises(MasterKeyError, match=f"encrypted under master key {first.kid}.*"
                                            f"it holds {second.kid} from STRATUS_MASTER_KEY"):
        Keyring([second], "env", None).unwrap(wrapped, "obj")
    reader.promote(first)
    assert reader.kids == [first.kid, second.kid]
    assert reader.retire_others() == [second.kid] and reader.kids == [first.kid]
