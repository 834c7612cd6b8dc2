"""Request bodies of the OpenAI-compatible routes, validated with pydantic, and their turn into
the LLM and embedding servers' internal requests. Unknown fields are ignored, as clients send
many; fields whose non-default values Stratus cannot honour are refused by name."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stratus.errors import BadRequest
from stratus.security.jsondepth import DEFAULT_MAX_DEPTH, check_depth

T = TypeVar("T", bound=BaseModel)

MAX_STOP_STRINGS = 4
MAX_BATCH_INPUTS = 2048


class InvalidParameter(BadRequest):
    """A request field is out of range or unsupported; ``param`` names it, as OpenAI does."""

    type = "invalid_parameter"

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=100_000)  # an extension, as vLLM's
    n: int = Field(default=1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    logprobs: Any = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported")
        return value

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def sampling(self) -> dict[str, Any]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k or None, "stop": stops,
                "seed": self.seed}


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1, le=1_000_000)  # OpenAI's default here
    echo: bool = Field(default=False)

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One or more prompts; each becomes its own choice."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise InvalidParameter("prompt must not be empty", "prompt")
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        if len(prompt) > MAX_BATCH_INPUTS:
            raise InvalidParameter(f"at most {MAX_BATCH_INPUTS} prompts per request", "prompt")
        return list(prompt)  # type: ignore[arg-type]

    def invocation(self, prompt: str | list[int]) -> dict[str, Any]:
        return {"op": "completion", "prompt": prompt, **self.sampling()}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    def invocation(self) -> dict[str, Any]:
        sampling = self.sampling()
        if self.max_completion_tokens is not None:
            sampling["max_tokens"] = self.max_completion_tokens
        messages = [{"role": m.role, "content": m.text()} for m in self.messages]
        return {"op": "chat", "messages": messages, **sampling}


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: the model's own size is returned")
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        given = self.input
        if isinstance(given, str):
            return [given]
        if not given:
            raise InvalidParameter("input must not be empty", "input")
        if len(given) > MAX_BATCH_INPUTS:
            raise InvalidParameter(f"at most {MAX_BATCH_INPUTS} inputs per request", "input")
        if all(isinstance(item, int) for item in given):
            return [[int(item) for item in given]]  # type: ignore[arg-type]
        return given  # type: ignore[return-value]


def parse(model: type[T], body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> T:
    """Validate a body, turning the first problem into an error that names its field."""
    check_depth(body, max_depth)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
        param = location[0] if location else None
        if first.get("type") == "json_invalid":
            raise InvalidParameter(f"request body is not valid JSON: {first.get('msg')}",
                                   None) from None
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidParameter(f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
                               param) from None
