"""Tests of the client without a cairn server: the event-stream parser,
the token, errors, and ``wait`` against a scripted stand-in on loopback
(a stream that drops, to check the reconnect with ``Last-Event-ID``).

The tests against a real ``cairn serve`` are in test_server.py.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cairn_client import (  # noqa: E402
    ApiError,
    Client,
    OperationCancelled,
    OperationFailed,
    Progress,
    ServerUnreachable,
    parse_events,
)


def operation(state: str, **extra: Any) -> Dict[str, Any]:
    value: Dict[str, Any] = {
        "id": "op-1",
        "name": "operations/op-1",
        "kind": "build",
        "state": state,
        "done": state in ("succeeded", "failed", "cancelled"),
        "build": 7,
        "expected": {"partitions": 2, "actions": 2, "current": 0, "to_run": 2},
        "counts": {"executed": 0, "cached": 0, "joined": 0, "failed": 0, "skipped": 0},
        "result": None,
        "error": None,
    }
    value.update(extra)
    return value


def sse(event: str, data: Any, id: Optional[int] = None) -> bytes:
    text = f"event: {event}\n"
    if id is not None:
        text += f"id: {id}\n"
    return (text + f"data: {json.dumps(data)}\n\n").encode()


class ParseEvents(unittest.TestCase):
    def test_events_ids_comments_and_multi_line_data(self) -> None:
        lines = [
            b": keep-alive\n",
            b"\n",
            b"event: cairn\n",
            b"id: 7\n",
            b'data: {"seq":7}\n',
            b"\n",
            b"event: cairn\r\n",
            b"id: 8\r\n",
            b'data:{"a":\r\n',
            b"data: 1}\r\n",
            b"\r\n",
            b"data: plain\n",
            b"\n",
            b"data: cut off",
        ]
        events = list(parse_events(lines))
        self.assertEqual([e.event for e in events], ["cairn", "cairn", "message"])
        self.assertEqual([e.data for e in events], ['{"seq":7}', '{"a":\n1}', "plain"])
        self.assertEqual([e.id for e in events], ["7", "8", "8"])


class Tokens(unittest.TestCase):
    def test_token_then_file_then_environment(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            file = Path(directory) / "serve.token"
            file.write_text("abc123\n")
            old = os.environ.get("CAIRN_TOKEN")
            os.environ["CAIRN_TOKEN"] = "fromenv"
            try:
                self.assertEqual(Client("http://127.0.0.1:1", "given").token, "given")
                self.assertEqual(Client("http://127.0.0.1:1", token_file=file).token, "abc123")
                self.assertEqual(Client("http://127.0.0.1:1").token, "fromenv")
                del os.environ["CAIRN_TOKEN"]
                self.assertIsNone(Client("http://127.0.0.1:1").token)
                file.write_text("\n")
                with self.assertRaises(ValueError):
                    Client("http://127.0.0.1:1", token_file=file)
            finally:
                if old is None:
                    os.environ.pop("CAIRN_TOKEN", None)
                else:
                    os.environ["CAIRN_TOKEN"] = old

    def test_a_url_must_be_http(self) -> None:
        with self.assertRaises(ValueError):
            Client("127.0.0.1:8080")


class Scripted(BaseHTTPRequestHandler):
    """Answers from the server's `script`: `(method, path) -> handler`."""

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def answer(self, method: str) -> None:
        server: Stand = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server.requests.append(
            (method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        handler = server.script.get((method, self.path.split("?")[0]))
        if handler is None:
            self.reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no such thing"}})
            return
        handler(self)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.answer("POST")

    def reply(self, code: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, chunks: List[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
        self.close_connection = True


class Stand(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Scripted)
        self.script: Dict[Tuple[str, str], Any] = {}
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class AgainstAStandIn(unittest.TestCase):
    def setUp(self) -> None:
        self.stand = Stand()
        self.client = Client(self.stand.url, "t0ken")

    def tearDown(self) -> None:
        self.stand.stop()

    def test_a_submit_sends_the_token_the_body_and_a_fresh_key(self) -> None:
        self.stand.script[("POST", "/v1/builds")] = lambda h: h.reply(202, operation("queued"))
        first = self.client.submit_build(["clean/*"], keep_going=True)
        self.client.submit_build(["clean/*"], idempotency_key="ci-1")
        self.client.submit_build(["clean/*"])
        self.assertEqual(first.id, "op-1")
        self.assertEqual(first.expected["actions"], 2)
        (_, _, headers, body), (_, _, headers2, _), (_, _, headers3, _) = self.stand.requests
        self.assertEqual(headers["authorization"], "Bearer t0ken")
        self.assertEqual(json.loads(body)["refs"], ["clean/*"])
        self.assertTrue(json.loads(body)["keep_going"])
        self.assertEqual(headers2["idempotency-key"], "ci-1")
        self.assertNotEqual(headers["idempotency-key"], headers3["idempotency-key"])

    def test_a_refusal_carries_the_servers_status_and_message(self) -> None:
        def refuse(h: Scripted) -> None:
            h.reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                    "message": "backfill config jan.toml: line 2: no dataset x"}})

        self.stand.script[("POST", "/v1/backfills")] = refuse
        with self.assertRaises(ApiError) as raised:
            self.client.submit_backfill(config="target = 'x'\n", config_name="jan.toml")
        self.assertEqual(raised.exception.code, 400)
        self.assertEqual(raised.exception.status, "INVALID_ARGUMENT")
        self.assertIn("line 2: no dataset x", str(raised.exception))
        self.assertEqual(json.loads(self.stand.requests[0][3])["config_name"], "jan.toml")

    def test_an_operation_id_is_one_path_segment(self) -> None:
        self.stand.script[("GET", "/v1/operations/a%2Fb")] = lambda h: h.reply(200, operation("running"))
        self.assertEqual(self.client.get("a/b").state, "running")

    def test_wait_reconnects_with_the_last_event_id_and_counts_progress(self) -> None:
        started = {"kind": "ActionStarted", "seq": 3}
        succeeded = {"kind": "ActionSucceeded", "seq": 4}
        cached = {"kind": "ActionCached", "seq": 5}
        streams = [
            # The first connection drops after one finished action.
            [sse("cairn", started, 3), sse("cairn", succeeded, 4)],
            [sse("cairn", cached, 5), b": keep-alive\n\n",
             sse("done", operation("succeeded", result={"executed": 1, "cached": 1}))],
        ]

        def events(h: Scripted) -> None:
            h.stream(streams.pop(0))

        # One of the two actions was current at submit (a restore, whose
        # ActionCached comes later): done from the start.
        running = operation(
            "running", expected={"partitions": 2, "actions": 2, "current": 1, "to_run": 1}
        )
        self.stand.script[("GET", "/v1/operations/op-1")] = lambda h: h.reply(200, running)
        self.stand.script[("GET", "/v1/operations/op-1/events")] = events
        seen: List[Progress] = []
        final = self.client.wait("op-1", on_progress=seen.append)
        self.assertEqual(final.state, "succeeded")
        self.assertEqual([(p.done, p.total) for p in seen], [(2, 2), (2, 2)])
        self.assertEqual([p.event["kind"] for p in seen if p.event], ["ActionSucceeded", "ActionCached"])
        self.assertEqual(seen[-1].counts["cached"], 1)
        self.assertEqual(seen[-1].counts["executed"], 1)
        stream_requests = [r for r in self.stand.requests if r[1].endswith("/events")]
        self.assertEqual(len(stream_requests), 2)
        self.assertNotIn("last-event-id", stream_requests[0][2])
        self.assertEqual(stream_requests[1][2]["last-event-id"], "4")

    def test_a_failed_operation_raises_with_the_failed_partitions_and_their_tails(self) -> None:
        failed = operation(
            "failed",
            error={"code": 500, "status": "INTERNAL", "message": "1 action failed",
                   "failed": [{"partition": "clean/x=1", "job": "clean",
                               "log_tail": "Traceback\nValueError: bad rating"}]},
        )
        self.stand.script[("GET", "/v1/operations/op-1")] = lambda h: h.reply(200, failed)
        with self.assertRaises(OperationFailed) as raised:
            self.client.wait("op-1", poll=0.01)
        self.assertEqual(raised.exception.failed[0].partition, "clean/x=1")
        self.assertIn("ValueError: bad rating", raised.exception.failed[0].log_tail)
        self.assertIn("ValueError: bad rating", str(raised.exception))
        self.assertNotIsInstance(raised.exception, OperationCancelled)

    def test_polling_reports_the_servers_counts_until_done(self) -> None:
        answers = [
            operation("running", counts={"executed": 1, "cached": 0, "joined": 0, "failed": 0, "skipped": 0}),
            operation("cancelled"),
        ]
        self.stand.script[("GET", "/v1/operations/op-1")] = lambda h: h.reply(200, answers.pop(0))
        seen: List[Progress] = []
        with self.assertRaises(OperationCancelled):
            self.client.wait("op-1", on_progress=seen.append, poll=0.01)
        self.assertEqual([p.state for p in seen], ["running", "cancelled"])
        self.assertEqual(seen[0].done, 1)


class Unreachable(unittest.TestCase):
    def test_nothing_listening_is_server_unreachable(self) -> None:
        stand = Stand()
        url = stand.url
        stand.stop()
        with self.assertRaises(ServerUnreachable) as raised:
            Client(url).get("op-1")
        self.assertIn(url, str(raised.exception))


if __name__ == "__main__":
    unittest.main()
