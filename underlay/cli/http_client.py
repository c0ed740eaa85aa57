"""What the CLI's server commands share: where the server is, its API key, and its errors as one line.

``underlay datasets``, ``underlay eval`` and ``underlay fine-tune`` talk to a running server over its HTTP
API with :class:`Server`; a failure (unreachable server, an error envelope, a non-JSON answer) is a
:class:`CliError` whose message the command prints as one ``error:`` line before exiting 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

API_KEY_ENV = "UNDERLAY_API_KEY"
URL_ENV = "UNDERLAY_BASE_URL"
DEFAULT_URL = "http://127.0.0.1:8321"
TIMEOUT_SECONDS = 300.0
"""A large file is parsed and checked while the register call waits."""


class CliError(Exception):
    """A failure to print as one line (exit code 1)."""


def fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


class Server:
    """The few HTTP calls these commands make, with the server's error envelope turned into one line."""

    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        base = (args.url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.base = base[: -len("/v1")] if base.endswith("/v1") else base
        key = args.api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=TIMEOUT_SECONDS)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"could not reach {self.base}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise CliError(f"{method} {path} returned {response.status_code}: {message_of(response)}")
        try:
            data = response.json()
        except ValueError:
            raise CliError(f"{method} {path} did not return JSON") from None
        if not isinstance(data, dict):
            raise CliError(f"{method} {path} did not return an object")
        return data


def message_of(response: Any) -> str:
    try:
        error = response.json()["error"]
        message = str(error["message"])
        return f"{message} (param: {error['param']})" if error.get("param") else message
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason_phrase


def table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
