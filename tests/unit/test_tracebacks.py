"""Handler tracebacks cut to the bundle: from its first frame on, files named as in the bundle,
each link of a chain alike, and a stack with no frame of the bundle kept whole."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stratus.runtime.tracebacks import HandlerTracebacks

HELPERS = '''
def parse(text):
    return int(text)

def wrapped(text):
    try:
        return parse(text)
    except ValueError as exc:
        raise RuntimeError("could not read the amount") from exc
'''


def _module(bundle: Path) -> ModuleType:
    (bundle / "lib").mkdir(parents=True)
    (bundle / "lib" / "helpers.py").write_text(HELPERS)
    spec = importlib.util.spec_from_file_location("bundle_helpers", bundle / "lib" / "helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _caught(call: object, *args: str) -> BaseException:
    with pytest.raises(Exception) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_frames_before_the_bundle_go_and_its_paths_are_relative(tmp_path: Path) -> None:
    bundle = tmp_path / "bundles" / "ab12"
    helpers = _module(bundle)
    text = HandlerTracebacks(str(bundle)).format(_caught(helpers.parse, "x"))
    assert text.startswith("Traceback (most recent call last):\n"), text
    assert 'File "lib/helpers.py", line 3, in parse' in text and "return int(text)" in text
    assert __file__ not in text and "/bundles/" not in text, text  # the caller: not the bundle's
    assert text.endswith("ValueError: invalid literal for int() with base 10: 'x'")


def test_each_link_of_a_chain_is_cut_alike(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    helpers = _module(bundle)
    text = HandlerTracebacks(str(bundle)).format(_caught(helpers.wrapped, "x"))
    assert "direct cause of the following exception" in text
    assert text.count('File "lib/helpers.py"') == 3, text
    assert str(bundle) not in text and __file__ not in text, text


def test_a_stack_without_the_bundle_is_kept_whole(tmp_path: Path) -> None:
    def fail() -> None:
        raise KeyError("engine")

    text = HandlerTracebacks(str(tmp_path / "elsewhere")).format(_caught(fail))
    assert __file__ in text and "in fail" in text and "KeyError: 'engine'" in text


def test_it_stands_in_for_logging(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    helpers = _module(bundle)
    exc = _caught(helpers.parse, "y")
    text = HandlerTracebacks(str(bundle)).format_exc_info((type(exc), exc, exc.__traceback__))
    assert 'File "lib/helpers.py"' in text and not text.endswith("\n")
    assert sys.modules.get("bundle_helpers") is None
