"""A thin httpx client for the Stratus API that turns error responses into CliError."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        text = f"{error['type']} ({response.status_code}): {error['message']}"
        if error.get("detail"):
            text += f"\n{error['detail']}"
        return text
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"


class Client:
    def __init__(self, server: str | None, api_key: str | None, namespace: str | None = None,
                 timeout: float = 300.0) -> None:
        self.base_url = (server or os.environ.get("STRATUS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("STRATUS_API_KEY") or ""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        if namespace:
            headers["x-stratus-namespace"] = namespace
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201),
                **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the Stratus server at {self.base_url} ({exc}). Is it "
                           "running (`stratus serve`)? For a server elsewhere, pass --server URL "
                           "or set STRATUS_URL, e.g. STRATUS_URL=http://127.0.0.1:8080", 2) from None
        if response.status_code not in expect:
            raise CliError(describe_error(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def upload(self, path: str, chunks: Iterator[bytes], size: int) -> httpx.Response:
        return self.request("PUT", path, content=chunks,
                            headers={"content-type": "application/gzip",
                                     "content-length": str(size)})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
