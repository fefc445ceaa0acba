"""Talking to a running app's admin server: JSON over HTTP, every failure one clear line."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ._errors import CliError

DEFAULT_URL = "http://127.0.0.1:3001"
TOKEN_ENV = "SPINDLE_ADMIN_TOKEN"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--token`` and ``--timeout``, shared by every command that asks the app."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the admin server's root URL (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"the app's admin_token (default: ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)"
    )


class _NotFound(Exception):
    """A 404, kept apart so a caller can try another path."""


class AdminClient:
    """A few JSON calls to one admin server."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"--url must be an http:// or https:// URL, not {url!r}", 2)
        if timeout <= 0:
            raise CliError(f"--timeout must be a positive number of seconds, not {timeout}", 2)
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        """The client the ``--url``/``--token``/``--timeout`` arguments describe."""
        return cls(args.url, args.token, args.timeout)

    def get_json(
        self, path: str, query: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """GET ``path`` (relative to the root) and parse its JSON body.

        ``missing_ok``: a 404 returns None instead of failing (to try another path).
        """
        try:
            return self._call("GET", path, query)
        except _NotFound as exc:
            if missing_ok:
                return None
            raise CliError(str(exc)) from None

    def post_json(self, path: str) -> Any:
        """POST (no body) to ``path`` and parse its JSON body."""
        try:
            return self._call("POST", path, None)
        except _NotFound as exc:
            raise CliError(str(exc)) from None

    def _call(self, method: str, path: str, query: dict[str, Any] | None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        request = urllib.request.Request(url, method=method)
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if method == "POST":
            # Same-origin, as a browser would send it: the admin app checks Origin on POSTs.
            request.add_header("Origin", self.url)
            request.data = b""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _NotFound(self._http_error(exc)) from None
            raise CliError(self._http_error(exc)) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach {self.url}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise CliError(f"cannot reach {self.url}: {exc}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise CliError(f"{url} did not answer JSON (is it a Spindle admin server?)") from None

    def _http_error(self, exc: urllib.error.HTTPError) -> str:
        if exc.code == 401:
            hint = "the token was refused" if self.token else f"pass --token or set {TOKEN_ENV}"
            return f"{self.url} answered 401 Unauthorized: {hint}"
        detail = ""
        try:
            data = json.loads(exc.read() or b"null")
            if isinstance(data, dict):
                detail = str(data.get("error") or data.get("detail") or "")
        except (ValueError, OSError):
            pass
        if exc.code == 404 and not detail:
            detail = "not found (is enable_diagnostics on in the app's config?)"
        return f"{exc.url} answered {exc.code}: {detail or exc.reason}"
