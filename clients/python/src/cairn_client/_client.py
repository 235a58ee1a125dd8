"""The client: operations submitted, read, followed and cancelled through
the HTTP API of ``cairn serve`` (docs/api.md in the cairn repository)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._sse import parse_events

PathLike = Union[str, "os.PathLike[str]"]

#: The states of an operation that are final.
DONE_STATES = ("succeeded", "failed", "cancelled")

#: How long the event stream may stay silent before it counts as dropped
#: (the server sends a keep-alive comment every 15 s).
STREAM_READ_TIMEOUT = 45.0

#: How long ``wait`` keeps trying to reach a server that went away.
RECONNECT_FOR = 30.0


class CairnError(Exception):
    """Anything that went wrong talking to the server."""


class ServerUnreachable(CairnError):
    """No answer: nothing listens at the URL, or the connection dropped."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the cairn server at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(CairnError):
    """A 4xx or 5xx answer: ``code`` (the HTTP status), ``status`` (e.g.
    ``INVALID_ARGUMENT``) and the server's ``message`` (the CLI's message
    for the same input, naming the file, line, field or ref)."""

    def __init__(self, url: str, code: int, status: str, message: str) -> None:
        text = f"{url} answered {code}"
        if status:
            text += f" {status}"
        super().__init__(f"{text}: {message}")
        self.url = url
        self.code = code
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FailedPartition:
    """A partition whose job failed, with the last lines of its stderr."""

    partition: str
    job: Optional[str] = None
    log_tail: str = ""
    error: Optional[str] = None


@dataclass(frozen=True)
class Operation:
    """The Operation resource (docs/api.md); ``raw`` is the whole JSON."""

    id: str
    kind: str
    state: str
    done: bool
    build: Optional[int]
    expected: Dict[str, int]
    counts: Dict[str, int]
    result: Optional[Dict[str, Any]]
    error: Optional[Dict[str, Any]]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Operation":
        return cls(
            id=str(value["id"]),
            kind=str(value.get("kind") or ""),
            state=str(value.get("state") or ""),
            done=bool(value.get("done")),
            build=value.get("build"),
            expected=dict(value.get("expected") or {}),
            counts=dict(value.get("counts") or {}),
            result=value.get("result"),
            error=value.get("error"),
            raw=dict(value),
        )

    @property
    def failed_partitions(self) -> List[FailedPartition]:
        """The partitions that failed (from ``error.failed``)."""
        failed = (self.error or {}).get("failed") or []
        return [
            FailedPartition(
                partition=str(item.get("partition", "")),
                job=item.get("job"),
                log_tail=str(item.get("log_tail") or ""),
                error=item.get("error"),
            )
            for item in failed
        ]


class OperationFailed(CairnError):
    """The operation ended ``failed`` (or ``cancelled``: see
    :class:`OperationCancelled`); ``failed`` lists the failed partitions
    with their log tails, ``operation`` is the final resource."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.failed = operation.failed_partitions
        message = str((operation.error or {}).get("message") or f"operation {operation.state}")
        lines = [f"operation {operation.id} {operation.state}: {message}"]
        for failed in self.failed:
            lines.append(f"  {failed.partition}" + (f" ({failed.job})" if failed.job else ""))
            for tail in failed.log_tail.splitlines():
                lines.append(f"    {tail}")
        super().__init__("\n".join(lines))


class OperationCancelled(OperationFailed):
    """The operation was cancelled before it finished."""


@dataclass(frozen=True)
class Progress:
    """What ``wait``'s ``on_progress`` gets: the counts so far
    (``executed``, ``cached``, ``joined``, ``failed``, ``skipped``), the
    actions ``done`` of ``total`` expected (the operation's
    ``expected.actions``), the state, and the event that moved it (a
    ``cairn log --json`` object; ``None`` when polling)."""

    operation_id: str
    state: str
    counts: Dict[str, int]
    expected: Dict[str, int]
    done: int
    total: int
    event: Optional[Dict[str, Any]] = None


ProgressCallback = Callable[[Progress], None]

#: Event kinds that end an action, and the count each adds to.
_FINISHING = {
    "ActionSucceeded": "executed",
    "ActionCached": "cached",
    "ActionJoined": "joined",
    "ActionFailed": "failed",
    "ActionSkipped": "skipped",
}


class Client:
    """A client of the ``cairn serve`` at ``url`` (``http://HOST:PORT``).

    The bearer token is ``token``, else the contents of ``token_file``,
    else ``$CAIRN_TOKEN``; a server started with ``--public-read`` answers
    reads without one.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        token_file: Optional[PathLike] = None,
        timeout: float = 60.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http:// URL: {url!r} (e.g. http://127.0.0.1:8080)")
        self.url = url.rstrip("/")
        if token is None and token_file is not None:
            with open(token_file, encoding="utf-8") as file:
                token = file.read().strip()
            if not token:
                raise ValueError(f"token file {os.fspath(token_file)}: the file is empty")
        if token is None:
            token = os.environ.get("CAIRN_TOKEN", "").strip() or None
        self.token = token
        self.timeout = timeout

    # ------------------------------------------------------------ requests

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        url = self.url + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise _api_error(url, error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(url, str(reason)) from None
        return json.loads(text) if text else None

    def _operation(self, answer: Any) -> Operation:
        return Operation.from_json(answer)

    # ---------------------------------------------------------- submitting

    def submit_build(
        self,
        refs: Sequence[str],
        *,
        keep_going: bool = False,
        retries: Optional[int] = None,
        jobs: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> Operation:
        """Submits a build of ``refs`` (refs or patterns); returns the
        accepted operation. The same ``idempotency_key`` with the same
        request returns the same operation (a retried submit is never run
        twice); with a different request the server refuses it
        (:class:`ApiError` 422)."""
        if isinstance(refs, str):
            refs = [refs]
        body = {
            "refs": list(refs),
            "keep_going": keep_going,
            "retries": retries,
            "jobs": jobs,
            "dry_run": False,
        }
        return self._operation(
            self._request("POST", "/v1/builds", body, _key_header(idempotency_key))
        )

    def submit_backfill(
        self,
        config_path: Optional[str] = None,
        config: Optional[str] = None,
        *,
        config_name: Optional[str] = None,
        keep_going: bool = True,
        idempotency_key: Optional[str] = None,
    ) -> Operation:
        """Submits a backfill: ``config_path`` is a config file in the
        server's project (relative to its graph file), ``config`` the TOML
        text of one (named ``config_name`` in messages). A bad config is
        refused with the CLI's file/line/field message (:class:`ApiError`
        400)."""
        body = _backfill_body(config_path, config, config_name, keep_going)
        return self._operation(
            self._request("POST", "/v1/backfills", body, _key_header(idempotency_key))
        )

    def retry_failed(
        self,
        config_path: Optional[str] = None,
        config: Optional[str] = None,
        *,
        config_name: Optional[str] = None,
        keep_going: bool = True,
        idempotency_key: Optional[str] = None,
    ) -> Optional[Operation]:
        """Submits the backfill ``config_path`` or ``config`` (as
        :meth:`submit_backfill` takes them) for its failed partitions only,
        as ``cairn backfill --retry-failed`` picks them: those whose last
        attempt failed, or an input's, whichever operation ran them (the
        server reads its store). Returns the accepted operation, or
        ``None`` when no partition of the backfill has a failed last
        attempt (the CLI says "nothing to retry" and exits 0)."""
        body = _backfill_body(config_path, config, config_name, keep_going)
        body["retry_failed"] = True
        answer = self._request("POST", "/v1/backfills", body, _key_header(idempotency_key))
        if isinstance(answer, Mapping) and answer.get("nothing_to_retry") is True:
            return None
        return self._operation(answer)

    # ------------------------------------------------------------- reading

    def get(self, op_id: str) -> Operation:
        """The operation ``op_id`` now."""
        return self._operation(self._request("GET", f"/v1/operations/{_segment(op_id)}"))

    def cancel(self, op_id: str) -> Operation:
        """Asks the server to cancel ``op_id`` (queued or running; a done
        operation is left as it is). The state becomes ``cancelled`` once
        its actions stopped: ``wait`` for it."""
        return self._operation(
            self._request("POST", f"/v1/operations/{_segment(op_id)}/cancel", {})
        )

    # ------------------------------------------------------------- waiting

    def wait(
        self,
        op_id: str,
        on_progress: Optional[ProgressCallback] = None,
        poll: Optional[float] = None,
        timeout: Optional[float] = None,
    ) -> Operation:
        """Follows ``op_id`` until it is done and returns it when it
        succeeded; raises :class:`OperationFailed` (with the failed
        partitions and their log tails) when it failed, and
        :class:`OperationCancelled` when it was cancelled.

        By default it follows the operation's event stream (reconnecting
        with ``Last-Event-ID`` when it drops, so no event is missed) and
        calls ``on_progress`` after every action that finishes; with
        ``poll`` (seconds) it polls ``GET /v1/operations/{id}`` instead.
        ``timeout`` (seconds) bounds the whole wait (:class:`TimeoutError`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if poll is None:
            final = self._follow(op_id, on_progress, deadline)
        else:
            final = self._poll(op_id, on_progress, poll, deadline)
        if final.state == "succeeded":
            return final
        if final.state == "cancelled":
            raise OperationCancelled(final)
        raise OperationFailed(final)

    def _poll(
        self,
        op_id: str,
        on_progress: Optional[ProgressCallback],
        poll: float,
        deadline: Optional[float],
    ) -> Operation:
        while True:
            operation = self.get(op_id)
            if on_progress is not None:
                counts = {name: int(operation.counts.get(name, 0)) for name in _FINISHING.values()}
                on_progress(
                    Progress(
                        operation_id=operation.id,
                        state=operation.state,
                        counts=counts,
                        expected=operation.expected,
                        done=sum(counts.values()),
                        total=int(operation.expected.get("actions", 0)),
                    )
                )
            if operation.done:
                return operation
            _check_deadline(deadline, op_id)
            time.sleep(poll)

    def _follow(
        self,
        op_id: str,
        on_progress: Optional[ProgressCallback],
        deadline: Optional[float],
    ) -> Operation:
        operation = self.get(op_id)
        if operation.done:
            return operation
        counts = {name: 0 for name in _FINISHING.values()}
        total = int(operation.expected.get("actions", 0))
        # The actions up to date or restorable at submit: an untouched one
        # is not in the log (the build's counts have it), so they are done
        # from the start, and a restore's ActionCached adds nothing.
        counts["cached"] = int(operation.expected.get("current", 0))
        state = operation.state
        last_id: Optional[str] = None
        lost_since: Optional[float] = None
        pause = 0.2
        path = f"/v1/operations/{_segment(op_id)}/events"
        while True:
            _check_deadline(deadline, op_id)
            try:
                for message in self._stream(path, last_id):
                    lost_since, pause = None, 0.2
                    if message.id is not None:
                        last_id = message.id
                    if message.event == "done":
                        return self._operation(json.loads(message.data))
                    if message.event != "cairn":
                        continue
                    event = json.loads(message.data)
                    kind = event.get("kind")
                    counted = _FINISHING.get(kind or "")
                    if counted is None:
                        continue
                    # A failed attempt that will be retried is not the end
                    # of the action.
                    if kind == "ActionFailed" and str(event.get("error", "")).endswith(
                        "; retrying)"
                    ):
                        continue
                    if kind != "ActionCached":
                        counts[counted] += 1
                    state = "running"
                    if on_progress is not None:
                        done = sum(counts.values())
                        on_progress(
                            Progress(
                                operation_id=op_id,
                                state=state,
                                counts=dict(counts),
                                expected=operation.expected,
                                done=done,
                                total=max(total, done),
                                event=event,
                            )
                        )
                    _check_deadline(deadline, op_id)
            except ServerUnreachable:
                if lost_since is None:
                    lost_since = time.monotonic()
                if time.monotonic() - lost_since > RECONNECT_FOR:
                    raise
            except ApiError as error:
                if error.code >= 500:
                    if lost_since is None:
                        lost_since = time.monotonic()
                    if time.monotonic() - lost_since <= RECONNECT_FOR:
                        time.sleep(pause)
                        continue
                raise
            # The stream ended (or dropped) without `done`: reconnect from
            # the last event seen.
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _stream(self, path: str, last_id: Optional[str]):  # type: ignore[no-untyped-def]
        url = self.url + path
        request = urllib.request.Request(url, method="GET")
        request.add_header("Accept", "text/event-stream")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if last_id is not None:
            request.add_header("Last-Event-ID", last_id)
        try:
            response = urllib.request.urlopen(request, timeout=STREAM_READ_TIMEOUT)
        except urllib.error.HTTPError as error:
            raise _api_error(url, error) from None
        except (urllib.error.URLError, OSError) as error:
            raise ServerUnreachable(url, str(getattr(error, "reason", error))) from None
        with response:
            try:
                yield from parse_events(response)
            except (OSError, socket.timeout, ValueError):
                # A dropped or silent connection: the caller reconnects.
                return


def _segment(text: str) -> str:
    """``text`` percent-encoded as one path segment."""
    return urllib.parse.quote(text, safe="")


def _backfill_body(
    config_path: Optional[str],
    config: Optional[str],
    config_name: Optional[str],
    keep_going: bool,
) -> Dict[str, Any]:
    """The body of ``POST /v1/backfills``, without its options."""
    if (config_path is None) == (config is None):
        raise ValueError("give exactly one of config_path and config")
    body: Dict[str, Any] = {"keep_going": keep_going, "dry_run": False}
    if config_path is not None:
        body["config_path"] = os.fspath(config_path)
    else:
        body["config"] = config
        body["config_name"] = config_name or "inline.toml"
    return body


def _key_header(key: Optional[str]) -> Dict[str, str]:
    """The ``Idempotency-Key`` header: ``key``, else a fresh random one
    (so that this call's own retries are never run twice)."""
    return {"Idempotency-Key": key if key is not None else "py-" + secrets.token_hex(16)}


def _check_deadline(deadline: Optional[float], op_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"operation {op_id} is not done yet")


def _api_error(url: str, error: urllib.error.HTTPError) -> ApiError:
    """The error an HTTP 4xx/5xx answer stands for, with the server's
    ``{"error": {"status", "message"}}`` when it sent one."""
    try:
        body = error.read() or b""
    except OSError:
        body = b""
    status, message = "", ""
    try:
        parsed = json.loads(body)
        detail = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(detail, dict):
            status = str(detail.get("status") or "")
            message = str(detail.get("message") or "")
    except ValueError:
        message = body.decode("utf-8", errors="replace").strip()
    return ApiError(url, error.code, status, message or str(error.reason))
