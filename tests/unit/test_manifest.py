"""Unit tests for deploy targets (file.py:Object or stratus.yaml) and heavy-import detection."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from stratus.cli.manifest import (
    BUILTIN_KEYS,
    MANIFEST_KEYS,
    ManifestError,
    Target,
    heavy_imports,
    load_target,
)
from stratus.spec import DeploymentRequest


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "svc"
    root.mkdir()
    (root / "app.py").write_text("class Model:\n    def __call__(self, request):\n        return request\n")
    return root


def write_manifest(root: Path, text: str, name: str = "stratus.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


def write_source(tmp_path: Path, text: str, name: str = "handler.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- file.py:Object targets ---------------------------------------------------------


def test_file_target(app_dir: Path) -> None:
    target = load_target(f"{app_dir}/app.py:Model")
    assert target == Target(
        root=app_dir.resolve(), entrypoint="app.py:Model", source=(app_dir / "app.py").resolve()
    )
    assert target.settings == {}


def test_relative_file_target_resolves_against_the_working_directory(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_dir.parent)
    target = load_target("svc/app.py:Model")
    assert target.root == app_dir.resolve()
    assert target.source.is_absolute()
    assert target.entrypoint == "app.py:Model"


def test_file_target_refuses_a_dotted_attribute(app_dir: Path) -> None:
    """The server imports one attribute of the module, so the CLI refuses deeper paths early."""
    with pytest.raises(ManifestError):
        load_target(f"{app_dir}/app.py:Model.handler")


@pytest.mark.parametrize(
    "target",
    ["app.py", "app.py:", "app:Model", "app.txt:Model", ":Model", "Model", ""],
    ids=["no-object", "empty-object", "no-suffix", "wrong-suffix", "no-file", "bare-name", "empty"],
)
def test_malformed_file_targets_are_rejected(
    target: str, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_dir)
    with pytest.raises(ManifestError, match=re.escape("must be 'path/to/file.py:Object' or a stratus.yaml")):
        load_target(target)


def test_missing_file_target_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_target(f"{tmp_path}/missing.py:Model")


def test_directory_named_like_a_python_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "pkg.py").mkdir()
    with pytest.raises(ManifestError, match="does not exist"):
        load_target(f"{tmp_path}/pkg.py:Model")


def test_manifest_error_is_a_value_error() -> None:
    assert issubclass(ManifestError, ValueError)


# -- stratus.yaml targets ----------------------------------------------------------


def test_manifest_target_with_settings(app_dir: Path) -> None:
    path = write_manifest(app_dir, """
        name: greeter
        entrypoint: app.py:Model
        min_replicas: 1
        max_replicas: 3
        max_concurrency: 4
        timeout_s: 10
        env:
          GREETING: bonjour
        config:
          threshold: 0.5
    """)
    target = load_target(str(path))
    assert target.root == app_dir.resolve()
    assert target.entrypoint == "app.py:Model"
    assert target.source == (app_dir / "app.py").resolve()
    assert target.settings == {
        "name": "greeter",
        "min_replicas": 1,
        "max_replicas": 3,
        "max_concurrency": 4,
        "timeout_s": 10,
        "env": {"GREETING": "bonjour"},
        "config": {"threshold": 0.5},
    }


def test_every_documented_key_is_accepted(app_dir: Path) -> None:
    code_keys = MANIFEST_KEYS - {"entrypoint", *BUILTIN_KEYS}
    lines = [f"{key}: null" for key in sorted(code_keys)]
    path = write_manifest(app_dir, "\n".join(["entrypoint: app.py:Model", *lines]) + "\n")
    assert set(load_target(str(path)).settings) == code_keys


def test_the_manifest_takes_every_field_of_the_rest_body() -> None:
    """The manifest is the REST body with ``entrypoint`` for ``code``: a field the API gains
    must not be refused as an unknown key (``async_invocations`` once was)."""
    body = set(DeploymentRequest.model_fields) - {"code"}
    assert body | {"entrypoint"} == MANIFEST_KEYS


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_a_builtin_server_manifest_has_no_code(app_dir: Path, key: str) -> None:
    path = write_manifest(app_dir, f"{key}: tiny@production\nname: chat\nmin_replicas: 1\n")
    target = load_target(str(path))
    assert target.root is None and target.entrypoint is None and target.source is None
    assert target.settings == {key: "tiny@production", "name": "chat", "min_replicas": 1}


def test_a_builtin_server_manifest_refuses_an_entrypoint_too(app_dir: Path) -> None:
    path = write_manifest(app_dir, "entrypoint: app.py:Model\nllm: tiny@1.0.0\n")
    with pytest.raises(ManifestError, match="one of"):
        load_target(str(path))
    path = write_manifest(app_dir, "llm: [1, 2]\n")
    with pytest.raises(ManifestError, match="model reference"):
        load_target(str(path))


def test_yml_extension_and_relative_path(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(app_dir, "entrypoint: app.py:Model\n", name="deploy.yml")
    monkeypatch.chdir(app_dir.parent)
    target = load_target("svc/deploy.yml")
    assert target.root == app_dir.resolve()
    assert target.source == (app_dir / "app.py").resolve()


def test_entrypoint_in_a_subdirectory(app_dir: Path) -> None:
    (app_dir / "src").mkdir()
    (app_dir / "src" / "serve.py").write_text("def handler(request):\n    return request\n")
    path = write_manifest(app_dir, "entrypoint: src/serve.py:handler\n")
    target = load_target(str(path))
    assert target.root == app_dir.resolve()
    assert target.entrypoint == "src/serve.py:handler"
    assert target.source == (app_dir / "src" / "serve.py").resolve()


def test_unknown_keys_are_rejected_and_listed(app_dir: Path) -> None:
    path = write_manifest(app_dir, """
        entrypoint: app.py:Model
        replicas: 3
        gpu: true
    """)
    with pytest.raises(ManifestError, match=r"unknown keys \['gpu', 'replicas'\]"):
        load_target(str(path))


@pytest.mark.parametrize(
    "text",
    ["name: greeter\n", "entrypoint: app.py\n", "entrypoint: 42\n", "entrypoint:\n",
     "entrypoint: [app.py:Model]\n"],
    ids=["missing", "no-colon", "number", "null", "list"],
)
def test_missing_or_malformed_entrypoint_is_rejected(app_dir: Path, text: str) -> None:
    path = write_manifest(app_dir, text)
    with pytest.raises(ManifestError, match=re.escape("'entrypoint: file.py:Object' is required")):
        load_target(str(path))


def test_empty_manifest_needs_an_entrypoint(app_dir: Path) -> None:
    path = write_manifest(app_dir, "")
    with pytest.raises(ManifestError, match="is required"):
        load_target(str(path))


def test_manifest_entrypoint_without_an_object_is_rejected(app_dir: Path) -> None:
    path = write_manifest(app_dir, "entrypoint: 'app.py:'\n")
    with pytest.raises(ManifestError):
        load_target(str(path))


def test_entrypoint_file_must_exist(app_dir: Path) -> None:
    path = write_manifest(app_dir, "entrypoint: missing.py:Model\n")
    with pytest.raises(ManifestError, match=r"entrypoint file .*missing\.py does not exist"):
        load_target(str(path))


def test_missing_manifest_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_target(str(tmp_path / "stratus.yaml"))


def test_invalid_yaml_is_rejected(app_dir: Path) -> None:
    path = write_manifest(app_dir, "entrypoint: [unclosed\n")
    with pytest.raises(ManifestError, match="is not valid YAML"):
        load_target(str(path))


@pytest.mark.parametrize("text", ["- entrypoint: app.py:Model\n", "just a string\n", "42\n"])
def test_manifest_must_be_a_mapping(app_dir: Path, text: str) -> None:
    path = write_manifest(app_dir, text)
    with pytest.raises(ManifestError, match="must hold a mapping"):
        load_target(str(path))


def test_yaml_tags_are_not_executed(app_dir: Path) -> None:
    path = write_manifest(app_dir, "entrypoint: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_target(str(path))


# -- heavy_imports -------------------------------------------------------------------


def test_import_inside_a_function_is_found(tmp_path: Path) -> None:
    source = write_source(tmp_path, """
        class Model:
            def __init__(self, ctx):
                import torch
                self.torch = torch
    """)
    assert heavy_imports(source) == ["torch"]


def test_submodules_aliases_and_from_imports(tmp_path: Path) -> None:
    source = write_source(tmp_path, """
        import os, pandas as pd
        import torch.nn.functional as F
        from sklearn.linear_model import LogisticRegression
        from transformers import pipeline

        def load():
            from scipy import sparse
            import onnxruntime
    """)
    assert heavy_imports(source) == ["torch", "transformers", "onnxruntime", "sklearn", "scipy", "pandas"]


def test_each_module_is_reported_once_in_a_fixed_order(tmp_path: Path) -> None:
    source = write_source(tmp_path, """
        import pandas
        import torch
        import torch.nn
        from torch import optim
        import pandas
    """)
    assert heavy_imports(source) == ["torch", "pandas"]


def test_light_relative_and_textual_imports_are_ignored(tmp_path: Path) -> None:
    source = write_source(tmp_path, '''
        """This handler does not import torch: "import torch" is only mentioned."""
        import numpy
        import torchvision
        from . import torch
        from .sklearn import thing
        # import transformers
        text = "import pandas"
    ''')
    assert heavy_imports(source) == []


def test_unparsable_sources_yield_nothing(tmp_path: Path) -> None:
    broken = write_source(tmp_path, "import torch\ndef broken(:\n", name="broken.py")
    assert heavy_imports(broken) == []
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"import torch\n\xff\xfe\x00")
    assert heavy_imports(binary) == []
    nul = tmp_path / "nul.py"
    nul.write_bytes(b"import torch\n\x00\n")
    assert heavy_imports(nul) == []


def test_a_manifests_retries_keep_their_on_key(app_dir: Path) -> None:
    """YAML 1.1 reads a bare ``on`` key as true; the retries section means the word."""
    path = write_manifest(app_dir, "entrypoint: app.py:Model\n"
                                   "retries: {attempts: 3, on: [connect], idempotent: on}\n")
    assert load_target(str(path)).settings["retries"] == {
        "attempts": 3, "on": ["connect"], "idempotent": True}
