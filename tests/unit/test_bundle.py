"""Unit tests for packing a code directory into a deterministic, content-addressed tarball."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from stratus.cli.bundle import build_bundle, collect_files

KEPT = {
    "app.py": b"print('hello')\n",
    "requirements.txt": b"numpy\n",
    "pkg/__init__.py": b"",
    "pkg/model.py": b"WEIGHTS = 'weights.bin'\n",
    "pkg/data/weights.bin": bytes(range(256)) * 16,
    "scripts/run.sh": b"#!/bin/sh\necho hi\n",
}
EXCLUDED = {
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".git/objects/ab/cdef": b"blob",
    ".venv/bin/python": b"#!",
    "venv/lib/x.py": b"",
    "__pycache__/app.cpython-311.pyc": b"\x00",
    "pkg/__pycache__/model.cpython-311.pyc": b"\x00",
    "stray.pyc": b"\x00",
    "pkg/old.pyc": b"\x00",
    ".stratus/state.json": b"{}",
    "node_modules/left-pad/index.js": b"",
    ".mypy_cache/x": b"",
    ".pytest_cache/x": b"",
    ".ruff_cache/x": b"",
    ".DS_Store": b"\x00",
    "pkg/.DS_Store": b"\x00",
    "my_app.egg-info/PKG-INFO": b"",
    ".hg/store": b"",
    ".svn/entries": b"",
}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def extract(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def contents(data: bytes) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            assert handle is not None
            result[member.name] = handle.read()
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    write_tree(root, {**KEPT, **EXCLUDED})
    (root / "scripts/run.sh").chmod(0o755)
    return root


def test_bundle_holds_exactly_the_kept_files(project: Path) -> None:
    bundle = build_bundle(project)
    assert contents(bundle.data) == KEPT
    assert bundle.files == len(KEPT)


def test_digest_is_the_sha256_of_the_data(project: Path) -> None:
    bundle = build_bundle(project)
    assert bundle.digest == hashlib.sha256(bundle.data).hexdigest()
    assert len(bundle.digest) == 64


def test_same_tree_gives_the_same_digest_twice(project: Path) -> None:
    first, second = build_bundle(project), build_bundle(project)
    assert first.digest == second.digest
    assert first.data == second.data


def test_touching_mtimes_does_not_change_the_digest(project: Path) -> None:
    before = build_bundle(project).digest
    for index, path in enumerate(sorted(project.rglob("*"))):
        os.utime(path, (1_000_000 + index, 1_500_000_000 + index * 7))
    assert build_bundle(project).digest == before


def test_creation_order_and_location_do_not_change_the_digest(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "elsewhere" / "two"
    write_tree(first, KEPT)
    write_tree(second, dict(reversed(list(KEPT.items()))))
    for root in (first, second):
        (root / "scripts/run.sh").chmod(0o755)
    assert build_bundle(first).digest == build_bundle(second).digest


def test_umask_style_permission_differences_do_not_change_the_digest(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    write_tree(first, {"app.py": b"x"})
    write_tree(second, {"app.py": b"x"})
    (first / "app.py").chmod(0o600)
    (second / "app.py").chmod(0o664)
    assert build_bundle(first).digest == build_bundle(second).digest


def test_content_change_changes_the_digest(project: Path) -> None:
    before = build_bundle(project).digest
    (project / "pkg/model.py").write_bytes(b"WEIGHTS = 'other.bin'\n")
    assert build_bundle(project).digest != before


def test_rename_changes_the_digest(project: Path) -> None:
    before = build_bundle(project).digest
    (project / "requirements.txt").rename(project / "requirements.in")
    assert build_bundle(project).digest != before


def test_executable_bit_is_kept_and_changes_the_digest(project: Path) -> None:
    members = extract(build_bundle(project).data)
    assert members["scripts/run.sh"].mode == 0o755
    assert members["app.py"].mode == 0o644
    before = build_bundle(project).digest
    (project / "app.py").chmod(0o755)
    assert build_bundle(project).digest != before


def test_entries_are_normalised_regular_files(project: Path) -> None:
    members = extract(build_bundle(project).data)
    for name, member in members.items():
        assert member.isfile(), name
        assert member.mtime == 0
        assert member.uid == 0 and member.gid == 0
        assert member.uname == "" and member.gname == ""
        assert not name.startswith("/") and ".." not in name.split("/")


def test_entries_are_in_a_stable_sorted_walk_order(project: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(build_bundle(project).data), mode="r:gz") as archive:
        names = archive.getnames()
    assert names == [
        "app.py",
        "requirements.txt",
        "pkg/__init__.py",
        "pkg/model.py",
        "pkg/data/weights.bin",
        "scripts/run.sh",
    ]


def test_gzip_header_carries_no_timestamp(project: Path) -> None:
    data = build_bundle(project).data
    assert data[:2] == b"\x1f\x8b"
    assert data[4:8] == b"\x00\x00\x00\x00"
    assert gzip.decompress(data)  # a valid stream


def test_stratusignore_patterns_are_honoured(project: Path) -> None:
    write_tree(project, {
        "secrets/key.pem": b"KEY",
        "logs/app.log": b"",
        "debug.log": b"",
        "pkg/data/big.bin": b"\x00" * 1024,
        "notes.md": b"keep me",
        "build/out.txt": b"",
    })
    (project / ".stratusignore").write_text(
        "# local-only files\n"
        "\n"
        "secrets/\n"
        "   *.log   \n"
        "pkg/data/big.bin\n"
        "build\n"
    )
    names = set(contents(build_bundle(project).data))
    assert names == set(KEPT) | {"notes.md", ".stratusignore"}


def test_stratusignore_comment_lines_are_not_patterns(project: Path) -> None:
    (project / "#notes").write_bytes(b"x")
    (project / ".stratusignore").write_text("#notes\n")
    assert "#notes" in contents(build_bundle(project).data)


def test_collect_files_returns_absolute_paths_inside_the_root(project: Path) -> None:
    files = collect_files(project)
    assert all(path.is_absolute() and path.is_relative_to(project) for path in files)
    assert {path.relative_to(project).as_posix() for path in files} == set(KEPT)


def test_empty_directory_gives_an_empty_archive(tmp_path: Path) -> None:
    bundle = build_bundle(tmp_path)
    assert bundle.files == 0
    assert contents(bundle.data) == {}
    assert build_bundle(tmp_path).digest == bundle.digest


def test_non_ascii_names_round_trip(tmp_path: Path) -> None:
    write_tree(tmp_path, {"donn\u00e9es/mod\u00e8le.py": b"x = 1\n"})
    assert contents(build_bundle(tmp_path).data) == {"donn\u00e9es/mod\u00e8le.py": b"x = 1\n"}
    assert build_bundle(tmp_path).digest == build_bundle(tmp_path).digest


def test_extracted_bundle_matches_the_source_tree(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(build_bundle(project).data), mode="r:gz") as archive:
        archive.extractall(target, filter="data")
    extracted = {
        path.relative_to(target).as_posix(): path.read_bytes()
        for path in target.rglob("*")
        if path.is_file()
    }
    assert extracted == KEPT
    assert os.access(target / "scripts/run.sh", os.X_OK)
    # Re-bundling the extracted tree reproduces the digest.
    assert build_bundle(target).digest == build_bundle(project).digest


def test_a_leading_slash_anchors_an_ignore_pattern_at_the_root(tmp_path: Path) -> None:
    write_tree(tmp_path, {"build/a.txt": b"1", "pkg/build/b.txt": b"2", "app.py": b"",
                          ".stratusignore": b"/build\n"})
    names = set(contents(build_bundle(tmp_path).data))
    assert "build/a.txt" not in names
    assert "pkg/build/b.txt" in names


def test_gitignore_is_honoured_with_git_semantics(project: Path) -> None:
    write_tree(project, {
        "model.ckpt": b"w", "keep.ckpt": b"k", "build/out.txt": b"", "pkg/build/mod.py": b"",
        "logs/a.txt": b"", "pkg/logs": b"a file, not a directory",
    })
    (project / ".gitignore").write_text("*.ckpt\n!keep.ckpt\n/build/\nlogs/\n")
    names = set(contents(build_bundle(project).data))
    assert names == set(KEPT) | {".gitignore", "keep.ckpt", "pkg/build/mod.py", "pkg/logs"}


def test_stratusignore_can_take_back_what_gitignore_excludes(project: Path) -> None:
    write_tree(project, {"weights.bin": b"w", "data.csv": b"c"})
    (project / ".gitignore").write_text("*.bin\n")
    (project / ".stratusignore").write_text("!weights.bin\ndata.csv\n")
    names = set(contents(build_bundle(project).data))
    assert "weights.bin" in names and "data.csv" not in names


def test_the_bundle_names_its_largest_files(project: Path) -> None:
    largest = build_bundle(project).largest
    assert largest[0] == ("pkg/data/weights.bin", 4096)
    assert [size for _, size in largest] == sorted((size for _, size in largest), reverse=True)
