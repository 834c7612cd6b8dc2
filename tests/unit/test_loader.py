"""Unit tests for entrypoint parsing and for importing and classifying user handlers."""

from __future__ import annotations

import logging
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus.errors import DeployError
from stratus.runtime.loader import HandlerKind, instantiate, load_handler, split_entrypoint
from stratus.sdk.context import Context
from stratus.sdk.options import DeploymentOptions, TensorSpec


@pytest.fixture(autouse=True)
def restore_process_state() -> Iterator[None]:
    """load_handler changes cwd and sys.path and imports modules: put all three back."""
    cwd = os.getcwd()
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    os.chdir(cwd)
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    return root


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def make_context(**config: object) -> Context:
    return Context(
        deployment="demo", namespace="default", revision=1, replica_id="r-1", config=config,
        env={}, memory_mb=None, timeout_s=30.0, logger=logging.getLogger("test"),
    )


# -- split_entrypoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("app.py:Model", ("app", "Model")),
        ("dir/app.py:Model", ("dir.app", "Model")),
        ("a/b/c.py:handler", ("a.b.c", "handler")),
        ("/dir/app.py:Model", ("dir.app", "Model")),
        ("dir\\sub\\app.py:Model", ("dir.sub.app", "Model")),
        ("package.module:Model", ("package.module", "Model")),
        ("app:_private", ("app", "_private")),
        ("app.py.py:M", ("app.py", "M")),
        ("pkg.sub.mod:Handler", ("pkg.sub.mod", "Handler")),
    ],
)
def test_split_entrypoint_forms(entrypoint: str, expected: tuple[str, str]) -> None:
    assert split_entrypoint(entrypoint) == expected


@pytest.mark.parametrize(
    "entrypoint",
    ["app.py", "app.py:", ":Model", "app.py:1Model", "app.py:Model.method", "app.py:my-model",
     "my-app.py:Model", "dir//app.py:Model", "1app.py:Model", "app..py:Model", "", ":"],
)
def test_split_entrypoint_rejects_malformed_entrypoints(entrypoint: str) -> None:
    with pytest.raises(DeployError):
        split_entrypoint(entrypoint)


def test_split_entrypoint_error_messages() -> None:
    with pytest.raises(DeployError, match=re.escape("must look like 'file.py:Object'")):
        split_entrypoint("app.py")
    with pytest.raises(DeployError, match="does not name an importable module"):
        split_entrypoint("my-app.py:Model")


# -- load_handler: handler kinds ------------------------------------------------------


def test_class_with_ctx(bundle: Path) -> None:
    write(bundle, "app.py", """
        import stratus

        @stratus.deployment(name="demo", max_concurrency=4, config={"k": 1},
                            inputs=[{"name": "x", "datatype": "fp32", "shape": [-1, 2]}])
        class Model:
            def __init__(self, ctx):
                self.ctx = ctx

            def __call__(self, request):
                return {"k": self.ctx.config["k"], "request": request}
    """)
    loaded = load_handler(str(bundle), "app.py:Model")
    assert loaded.kind is HandlerKind.CLASS
    assert loaded.is_async is False
    assert loaded.options.name == "demo"
    assert loaded.options.max_concurrency == 4
    assert loaded.options.inputs == [TensorSpec(name="x", datatype="FP32", shape=[-1, 2])]
    described = loaded.describe()
    assert described["kind"] == "class"
    assert described["is_async"] is False
    assert described["options"]["config"] == {"k": 1}
    handler = instantiate(loaded, make_context(k=7))
    assert handler({"a": 1}) == {"k": 7, "request": {"a": 1}}


def test_class_without_ctx_and_without_decorator(bundle: Path) -> None:
    write(bundle, "app.py", """
        class Model:
            def __init__(self):
                self.ready = True

            def __call__(self, request):
                return self.ready
    """)
    loaded = load_handler(str(bundle), "app.py:Model")
    assert loaded.kind is HandlerKind.CLASS
    assert loaded.options == DeploymentOptions()
    assert instantiate(loaded, make_context())(None) is True


def test_class_without_init(bundle: Path) -> None:
    write(bundle, "app.py", """
        class Model:
            def __call__(self, request):
                return request * 2
    """)
    loaded = load_handler(str(bundle), "app.py:Model")
    assert loaded.kind is HandlerKind.CLASS
    assert instantiate(loaded, make_context())(21) == 42


def test_async_call(bundle: Path) -> None:
    write(bundle, "app.py", """
        class Model:
            def __init__(self, ctx):
                pass

            async def __call__(self, request):
                return request
    """)
    loaded = load_handler(str(bundle), "app.py:Model")
    assert (loaded.kind, loaded.is_async) == (HandlerKind.CLASS, True)


def test_lambda_style_function(bundle: Path) -> None:
    write(bundle, "app.py", """
        def handler(event, context):
            return {"statusCode": 200, "body": "ok"}
    """)
    loaded = load_handler(str(bundle), "app.py:handler")
    assert (loaded.kind, loaded.is_async) == (HandlerKind.LAMBDA, False)
    assert instantiate(loaded, make_context()) is loaded.target
    assert loaded.describe()["kind"] == "lambda"


def test_one_argument_function(bundle: Path) -> None:
    write(bundle, "app.py", """
        def predict(request):
            return request
    """)
    loaded = load_handler(str(bundle), "app.py:predict")
    assert (loaded.kind, loaded.is_async) == (HandlerKind.FUNCTION, False)
    assert instantiate(loaded, make_context()) is loaded.target


def test_async_functions(bundle: Path) -> None:
    write(bundle, "app.py", """
        async def predict(request):
            return request

        async def handler(event, context):
            return event
    """)
    assert load_handler(str(bundle), "app.py:predict").is_async is True
    lambda_style = load_handler(str(bundle), "app.py:handler")
    assert (lambda_style.kind, lambda_style.is_async) == (HandlerKind.LAMBDA, True)


def test_keyword_only_and_var_arguments_do_not_count(bundle: Path) -> None:
    write(bundle, "app.py", """
        def predict(request, *args, option=None, **kwargs):
            return request
    """)
    assert load_handler(str(bundle), "app.py:predict").kind is HandlerKind.FUNCTION


def test_entrypoint_in_a_package_directory(bundle: Path) -> None:
    write(bundle, "pkg/__init__.py", "")
    write(bundle, "pkg/serve.py", """
        from .helpers import double

        def predict(request):
            return double(request)
    """)
    write(bundle, "pkg/helpers.py", "def double(x):\n    return 2 * x\n")
    loaded = load_handler(str(bundle), "pkg/serve.py:predict")
    assert loaded.kind is HandlerKind.FUNCTION
    assert loaded.target(4) == 8


# -- load_handler: errors -----------------------------------------------------------


def test_class_without_call_is_rejected(bundle: Path) -> None:
    write(bundle, "app.py", """
        class Model:
            def __init__(self, ctx):
                pass

            def predict(self, request):
                return request
    """)
    with pytest.raises(DeployError, match=r"app.py:Model: class has no __call__\(self, request\) method"):
        load_handler(str(bundle), "app.py:Model")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def __init__(self, ctx):\n    pass\ndef __call__(self):\n    pass\n", "__call__ must take exactly"),
        ("def __init__(self, ctx):\n    pass\ndef __call__(self, a, b):\n    pass\n",
         "__call__ must take exactly"),
        ("def __init__(self, ctx, extra):\n    pass\ndef __call__(self, r):\n    pass\n",
         "__init__ must take"),
    ],
    ids=["call-no-request", "call-two-args", "init-three-args"],
)
def test_class_with_wrong_signatures_is_rejected(bundle: Path, body: str, message: str) -> None:
    write(bundle, "app.py", "class Model:\n" + textwrap.indent(body, "    "))
    with pytest.raises(DeployError, match=message):
        load_handler(str(bundle), "app.py:Model")


@pytest.mark.parametrize(
    "source",
    ["def handler():\n    pass\n", "def handler(a, b, c):\n    pass\n", "def handler(*args):\n    pass\n"],
    ids=["no-args", "three-args", "var-args"],
)
def test_function_with_wrong_arity_is_rejected(bundle: Path, source: str) -> None:
    write(bundle, "app.py", source)
    with pytest.raises(DeployError, match="a function handler takes"):
        load_handler(str(bundle), "app.py:handler")


@pytest.mark.parametrize(
    ("source", "type_name"),
    [("handler = 42\n", "int"), ("import functools\nhandler = functools.partial(print)\n", "partial"),
     ("class M:\n    def __call__(self, r):\n        return r\nhandler = M()\n", "M")],
    ids=["int", "partial", "instance"],
)
def test_objects_that_are_neither_class_nor_function_are_rejected(
    bundle: Path, source: str, type_name: str
) -> None:
    write(bundle, "app.py", source)
    with pytest.raises(DeployError, match=f"{type_name} is neither a class nor a function"):
        load_handler(str(bundle), "app.py:handler")


def test_missing_attribute_is_rejected(bundle: Path) -> None:
    write(bundle, "app.py", "def predict(request):\n    return request\n")
    with pytest.raises(DeployError, match="module app has no attribute 'Model'"):
        load_handler(str(bundle), "app.py:Model")


def test_module_that_raises_at_import_is_a_deploy_error_with_the_message(bundle: Path) -> None:
    write(bundle, "app.py", """
        raise RuntimeError("cannot load weights.bin")
    """)
    with pytest.raises(DeployError) as info:
        load_handler(str(bundle), "app.py:Model")
    assert str(info.value) == "importing app failed: RuntimeError: cannot load weights.bin"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "app" not in sys.modules


@pytest.mark.parametrize(
    ("source", "error"),
    [("def broken(:\n", "SyntaxError"), ("import no_such_module_for_stratus\n", "ModuleNotFoundError"),
     ("import sys\nsys.exit(3)\n", "SystemExit"), ("raise KeyboardInterrupt\n", "KeyboardInterrupt")],
    ids=["syntax", "missing-import", "sys-exit", "keyboard-interrupt"],
)
def test_any_import_failure_is_a_deploy_error(bundle: Path, source: str, error: str) -> None:
    write(bundle, "app.py", source)
    with pytest.raises(DeployError, match=f"importing app failed: {error}"):
        load_handler(str(bundle), "app.py:Model")


def test_missing_module_is_a_deploy_error(bundle: Path) -> None:
    with pytest.raises(DeployError, match="importing nothere failed: ModuleNotFoundError"):
        load_handler(str(bundle), "nothere.py:Model")


def test_deploy_error_raised_by_user_code_is_passed_through(bundle: Path) -> None:
    write(bundle, "app.py", """
        from stratus.errors import DeployError
        raise DeployError("set MODEL_PATH first")
    """)
    with pytest.raises(DeployError) as info:
        load_handler(str(bundle), "app.py:Model")
    assert str(info.value) == "set MODEL_PATH first"


def test_malformed_entrypoint_fails_before_touching_the_process(bundle: Path) -> None:
    cwd = os.getcwd()
    with pytest.raises(DeployError):
        load_handler(str(bundle), "app.py")
    assert os.getcwd() == cwd
    assert str(bundle) not in sys.path


# -- load_handler: process state ----------------------------------------------------


def test_module_code_runs_in_the_bundle_directory_and_cwd_is_restored(bundle: Path) -> None:
    (bundle / "labels.txt").write_text("cat\ndog\n")
    write(bundle, "app.py", """
        import os
        LABELS = open("labels.txt").read().split()
        IMPORT_CWD = os.getcwd()

        def predict(request):
            return LABELS
    """)
    cwd = os.getcwd()
    loaded = load_handler(str(bundle), "app.py:predict")
    assert loaded.target(None) == ["cat", "dog"]
    assert Path(sys.modules["app"].IMPORT_CWD).resolve() == bundle.resolve()
    assert os.getcwd() == cwd


def test_cwd_is_restored_after_a_failed_import(bundle: Path) -> None:
    write(bundle, "app.py", "raise ValueError('nope')\n")
    cwd = os.getcwd()
    with pytest.raises(DeployError):
        load_handler(str(bundle), "app.py:Model")
    assert os.getcwd() == cwd


def test_bundle_directory_is_put_first_on_sys_path_once(bundle: Path) -> None:
    write(bundle, "app.py", "def predict(request):\n    return request\n")
    load_handler(str(bundle), "app.py:predict")
    assert sys.path[0] == str(bundle)
    load_handler(str(bundle), "app.py:predict")
    assert sys.path.count(str(bundle)) == 1


def test_bundle_module_shadows_a_same_named_module_elsewhere(bundle: Path, tmp_path: Path) -> None:
    # The bundle directory comes first on sys.path, so its helper wins.
    other = tmp_path / "other"
    other.mkdir()
    write(other, "helpers_for_stratus_test.py", "VALUE = 'other'\n")
    sys.path.append(str(other))
    write(bundle, "helpers_for_stratus_test.py", "VALUE = 'bundle'\n")
    write(bundle, "app.py", """
        from helpers_for_stratus_test import VALUE

        def predict(request):
            return VALUE
    """)
    assert load_handler(str(bundle), "app.py:predict").target(None) == "bundle"
