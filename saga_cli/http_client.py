"""A small synchronous HTTP client for the services' APIs, with failures turned into CliError.

`ServiceClient.request` returns the decoded JSON body of a 2xx answer. Every
failure raises CliError with one line the user can act on: unreachable
service, 422 validation errors rendered as "field: message; …", or any other
status with the service's own detail. Subclasses let a command say it better:
`NotFound` (404: "order X not found"), `Conflict` (409), `Unavailable` (503 or 429:
what is down, from the service's detail, and when to try again, from Retry-After)
and `OutcomeUnknown` (the request was sent, or may have been, but no answer came:
a timeout or a dropped connection; the service may or may not have acted on it).

Each request may take SAGA_HTTP_TIMEOUT seconds (default 10) to be sent and
answered; connecting gets at most 3 of them.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from saga_cli.endpoints import Service, not_reachable
from saga_cli.errors import CliError

TIMEOUT_ENV_VAR = "SAGA_HTTP_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0


def http_timeout() -> httpx.Timeout:
    """The timeout of each request, read at call time: SAGA_HTTP_TIMEOUT seconds (a positive
    number, default DEFAULT_TIMEOUT_S) for each of writing the request and reading the
    answer, and at most CONNECT_TIMEOUT_S of them to connect. CliError (one line) when the
    variable is set to anything but a positive number of seconds."""
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    seconds = DEFAULT_TIMEOUT_S
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):
            raise CliError(f"{TIMEOUT_ENV_VAR} must be a number of seconds greater than 0, got {raw!r}")
    return httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_S))


class NotFound(CliError):
    """The service answered 404 for the requested resource."""


class Conflict(CliError):
    """The service answered 409: the request does not fit the resource's state."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class OutcomeUnknown(CliError):
    """The request was sent, or partly, but no answer came (a timeout, or the connection
    dropped): the service may have acted on it or not. Retrying is safe only for a request
    that is idempotent, e.g. POST /orders with the same Idempotency-Key. Exit code 75
    (EX_TEMPFAIL: try again)."""

    exit_code = 75


class Unavailable(CliError):
    """The service answered 503 (a dependency it needs is down) or 429 (overloaded): it did
    not do what was asked and says to try again later. `detail` is what the service said
    (e.g. "database unavailable: …"), `retry_after` the seconds it asked to wait (None when it
    did not say). Exit code 75 (EX_TEMPFAIL: try again)."""

    exit_code = 75

    def __init__(self, message: str, detail: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.detail = detail
        self.retry_after = retry_after


class ServiceClient:
    """Calls one service's HTTP API (`request`); `transport` replaces the network (tests)."""

    def __init__(self, service: Service, transport: httpx.BaseTransport | None = None) -> None:
        self.service = service
        self._transport = transport

    def get(self, path: str) -> Any:
        """GET `path`: the decoded JSON; raises as `request` does."""
        return self.request("GET", path)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        """PUT `body` as JSON to `path`: the decoded JSON; raises as `request` does."""
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        """POST `body` (None: no body) as JSON to `path` with `headers`: the decoded JSON; raises as `request` does."""
        return self.request("POST", path, body=body, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """`method` `path` with `body` as JSON; the decoded JSON of a 2xx answer (None when
        empty). Raises CliError (one line) for every failure: NotFound (404), Conflict (409),
        OutcomeUnknown (sent, or partly, and no answer: a timeout after connecting, or the
        connection dropped), or not reachable (nothing was sent)."""
        url = self.service.url
        timeout = http_timeout()
        try:
            with httpx.Client(base_url=url, timeout=timeout, transport=self._transport) as client:
                response = client.request(method, path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):  # nothing was sent
            raise CliError(not_reachable(self.service.name, url)) from None
        except httpx.TimeoutException:  # a write or read timeout: sent, or partly
            raise OutcomeUnknown(
                f"{self.service.name} at {url} did not answer {method} {path} within {timeout.read:g}s"
            ) from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as error:
            raise OutcomeUnknown(
                f"{self.service.name} at {url} dropped the connection before answering {method} {path}"
                + (f" ({_one_line(str(error))[:200]})" if str(error) else "")
            ) from None
        except httpx.UnsupportedProtocol:
            raise CliError(f"{self.service.env_var}={url!r} is not an http:// or https:// URL") from None
        except (httpx.InvalidURL, ValueError) as error:
            raise CliError(f"{self.service.env_var}={url!r} is not a valid URL: {error}") from None
        except httpx.HTTPError as error:
            raise CliError(f"{self.service.name} at {url} failed on {method} {path}: {error}") from None
        return self._decode(method, path, response)

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.status_code == 404:
            raise NotFound(f"{self.service.name} has no {path}")
        body = _json_or_none(response)
        if response.status_code == 422:
            raise CliError(f"{self.service.name} rejected the request: {describe_validation_errors(body)}")
        if response.status_code in (429, 503):
            detail = describe_error_detail(body) if body is not None else _one_line(response.text)[:200]
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            state = "overloaded" if response.status_code == 429 else "unavailable"
            message = f"{self.service.name} is {state}" + (f": {detail}" if detail else "")
            when = f"in {retry_after}s" if retry_after is not None else "later"
            raise Unavailable(f"{message}; try again {when}", detail, retry_after)
        if not response.is_success:
            detail = describe_error_detail(body) if body is not None else _one_line(response.text)[:200]
            reason = f"{response.status_code} {response.reason_phrase}".strip()
            message = f"{self.service.name} answered {reason} to {method} {path}" + (f": {detail}" if detail else "")
            if response.status_code == 409:
                raise Conflict(message, detail)
            raise CliError(message)
        if body is None and response.content:
            raise CliError(f"{self.service.name} answered {method} {path} with something that is not JSON")
        return body


def retry_after_seconds(value: str | None) -> int | None:
    """A Retry-After header as whole seconds from now (at least 0): delta-seconds or an
    HTTP date; None when it is missing or neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0, math.ceil((when - datetime.now(timezone.utc)).total_seconds()))


def describe_validation_errors(body: Any) -> str:
    """A 422 body as one line "field: message; …".

    Understands the usual shapes: {"detail": [{"loc": [...], "msg": ...}]}
    (pydantic/FastAPI), {"errors": [...]}, a bare list, or {"field": "message"}.
    """
    errors = body
    if isinstance(body, dict):
        errors = next((body[key] for key in ("detail", "errors") if key in body), body)
    if isinstance(errors, list):
        described = [_describe_one_error(error) for error in errors]
        return _one_line("; ".join(part for part in described if part)) or "invalid input"
    if isinstance(errors, dict):
        return _one_line("; ".join(f"{field}: {_message_text(message)}" for field, message in errors.items()))
    if errors is None:
        return "invalid input"
    return _one_line(str(errors))


def describe_error_detail(body: Any) -> str:
    """One line of an error answer's body: its "detail", "error", "message" or "reason" (the first there),
    else the body as JSON cut at 200 characters."""
    if isinstance(body, dict):
        for key in ("detail", "error", "message", "reason"):
            if key in body:
                return _one_line(_message_text(body[key]))
    return _one_line(json.dumps(body))[:200]


def _describe_one_error(error: Any) -> str:
    if not isinstance(error, dict):
        return _message_text(error)
    location = error.get("loc", error.get("field", error.get("path")))
    message = _message_text(error.get("msg", error.get("message", error)))
    field = _field_name(location)
    return f"{field}: {message}" if field else message


def _field_name(location: Any) -> str:
    if isinstance(location, (list, tuple)):
        parts = [str(part) for part in location]
        if parts and parts[0] in ("body", "query", "path", "header"):
            parts = parts[1:]
        return ".".join(parts)
    return "" if location is None else str(location)


def _message_text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, list):
        return ", ".join(_message_text(part) for part in message)
    return json.dumps(message)


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
