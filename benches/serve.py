#!/usr/bin/env python3
"""The `cairn serve` benchmarks (issue 22; results in docs/benchmarks.md).

    python3 benches/serve.py [--cairn target/release/cairn] [--work DIR]
                             [--runs N] [--clients N] [--subscribers N]
                             [--sse-size DAYSxSTATIONS] [--skip-sse]
                             [--only round-trip|overlap|sse]

(`cargo build --release` first: it runs target/release/cairn.) `--only
overlap` runs just the 100-client submit benchmark (a minute or so).

On podcast workloads made by fixtures/podcast/generate, against a real
`cairn serve` started on a loopback port (and stopped by pid):

1. round trip: a no-op build submitted to the server and polled until done,
   against the same no-op build run locally (`cairn build`), 30x30;
2. overlap: N clients (default 100) at once each submit a backfill of the
   whole 30x30 graph (1,830 actions) with its own idempotency key; every
   action must start exactly once (counted from the event log), and the
   submit latencies (202 answer) are reported, p50 and p99;
3. SSE: M subscribers (default 50) follow /v1/events while a cold build of
   DAYSxSTATIONS (default 365x30: 22,265 actions) runs; each must see every
   event of the build, in sequence, none missing (checked against the log);
4. the server's RSS once idle with that store open.

Stdlib only. Prints a Markdown table; nothing is asserted by timing, but a
missed event or a twice-run action makes it exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Server:
    """A `cairn serve` on a free loopback port, in `project`."""

    def __init__(self, cairn: Path, project: Path) -> None:
        self.process = subprocess.Popen(
            [str(cairn), "serve", "--listen", "127.0.0.1:0"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = ""
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].split()[0].rstrip("/")
                break
        if not self.url:
            self.stop()
            sys.exit("serve.py: cairn serve did not say where it listens")
        self.token = (project / ".cairn" / "serve.token").read_text().strip()

    def request(self, method: str, path: str, body: object | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def wait(self, operation: str, pause: float = 0.001) -> dict:
        while True:
            status, body = self.request("GET", f"/v1/operations/{operation}")
            if status != 200:
                sys.exit(f"serve.py: GET operation {operation}: {status} {body}")
            if body.get("done"):
                return body
            time.sleep(pause)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def workload(work: Path, days: int, stations: int) -> Path:
    project = work / f"{days}x{stations}"
    if project.exists():
        shutil.rmtree(project)
    subprocess.run(
        ["sh", str(REPO / "fixtures/podcast/generate"), str(project), str(days), str(stations)],
        check=True,
    )
    return project


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def round_trip(cairn: Path, work: Path, runs: int) -> list[tuple[str, str]]:
    project = workload(work, 30, 30)
    subprocess.run([str(cairn), "build", "--no-wait"], cwd=project, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(cairn), "build"], cwd=project, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        local.append(time.perf_counter() - started)
    server = Server(cairn, project)
    try:
        remote = []
        for _ in range(runs):
            started = time.perf_counter()
            status, operation = server.request("POST", "/v1/builds", {"refs": []})
            if status not in (200, 202):
                sys.exit(f"serve.py: POST /v1/builds: {status} {operation}")
            done = server.wait(operation["id"])
            remote.append(time.perf_counter() - started)
            if done["state"] != "succeeded" or done["counts"].get("executed", 0) != 0:
                sys.exit(f"serve.py: the no-op build was not a no-op: {done}")
    finally:
        server.stop()
    overhead = statistics.median(remote) - statistics.median(local)
    return [
        ("no-op build, local `cairn build` (30x30, median)", median_ms(local)),
        ("no-op build through the server: submit + poll to done (median)", median_ms(remote)),
        ("server overhead (difference of the medians)", f"{overhead * 1000:+.1f} ms"),
    ]


BACKFILL = """
[[backfill]]
target = "daily/date={date}"
reason = "serve.py overlap benchmark"
[backfill.dimensions.date]
start = "2024-01-01"
end = "2024-01-30"
"""


def overlap(cairn: Path, work: Path, clients: int) -> tuple[list[tuple[str, str]], bool]:
    project = workload(work, 30, 30)
    server = Server(cairn, project)
    latencies: list[float] = []
    operations: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        status, body = server.request(
            "POST", "/v1/backfills", {"config": BACKFILL, "config_name": f"client-{index}.toml"},
            headers={"Idempotency-Key": f"serve-py-{os.getpid()}-{index}"},
        )
        elapsed = time.perf_counter() - started
        with lock:
            if status != 202:
                errors.append(f"client {index}: {status} {body}")
                return
            latencies.append(elapsed)
            operations.append(body["id"])

    def curl_clients() -> None:
        # One curl, all transfers at once on their own connections: a
        # client whose timing is not that of 100 Python threads taking
        # turns under one GIL on the server's 2 cores.
        spool = work / "curl-clients"
        shutil.rmtree(spool, ignore_errors=True)
        spool.mkdir()
        config = []
        for index in range(clients):
            body = spool / f"body-{index}.json"
            body.write_text(json.dumps({"config": BACKFILL, "config_name": f"client-{index}.toml"}))
            config += [
                f'url = "{server.url}/v1/backfills"',
                f'header = "Authorization: Bearer {server.token}"',
                'header = "Content-Type: application/json"',
                f'header = "Idempotency-Key: serve-py-{os.getpid()}-{index}"',
                f'data-binary = "@{body}"',
                f'output = "{spool / f"answer-{index}.json"}"',
                'write-out = "%{http_code} %{time_total}\\n"',
                "next",
            ]
        (spool / "config").write_text("\n".join(config[:-1]) + "\n")
        out = subprocess.run(
            ["curl", "--silent", "--parallel", "--parallel-immediate", "--parallel-max",
             str(clients), "--config", str(spool / "config")],
            check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            status, seconds = line.split()
            if status != "202":
                errors.append(f"a curl client: {status}")
                continue
            latencies.append(float(seconds))
        for index in range(clients):
            answer = json.loads((spool / f"answer-{index}.json").read_text() or "{}")
            if "id" in answer:
                operations.append(answer["id"])

    try:
        started = time.perf_counter()
        if shutil.which("curl"):
            client_kind = "curl --parallel"
            curl_clients()
        else:
            client_kind = "Python threads (no curl here)"
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            sys.exit("serve.py: " + "; ".join(errors[:3]))
        finals = [server.wait(operation, pause=0.05) for operation in operations]
        wall = time.perf_counter() - started
        handled = server_side(server, "/v1/backfills", "202")
        failed = [f for f in finals if f["state"] != "succeeded"]
        if failed:
            sys.exit(f"serve.py: {len(failed)} overlapping operations did not succeed: {failed[0]}")
    finally:
        server.stop()
    log = subprocess.run([str(cairn), "log", "--json", "--kind", "ActionStarted"],
                         cwd=project, check=True, capture_output=True, text=True).stdout
    started_keys: dict[str, int] = {}
    for line in log.splitlines():
        key = json.loads(line)["key"]
        started_keys[key] = started_keys.get(key, 0) + 1
    twice = [key for key, count in started_keys.items() if count > 1]
    if twice:
        print(f"serve.py: {len(twice)} actions started more than once", file=sys.stderr)
    return [
        (f"{clients} clients, overlapping backfills of 30x30: actions started",
         f"{sum(started_keys.values())} ({len(started_keys)} distinct keys, "
         f"{len(twice)} started twice)"),
        (f"submit latency while building, p50 / p99 ({client_kind} timing)",
         f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f} ms"),
        ("the same submits as the server timed them (its histogram: requests at most ...)",
         handled),
        ("all operations done (wall)", f"{wall:.1f} s"),
    ], bool(twice)


def server_side(server: Server, route: str, status: str) -> str:
    """The server's own duration histogram of `route` answering `status`
    (GET /metrics), cumulative per bucket: what the handler cost, without
    the client's threads and connects."""
    request = urllib.request.Request(server.url + "/metrics")
    request.add_header("Authorization", f"Bearer {server.token}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        text = answer.read().decode()
    buckets = []
    for line in text.splitlines():
        if (line.startswith("cairn_http_request_duration_seconds_bucket{")
                and f'route="{route}"' in line and f'status="{status}"' in line):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append(f"{bound} s: {line.rsplit(' ', 1)[1]}")
    return ", ".join(buckets)


def sse(cairn: Path, work: Path, subscribers: int, days: int,
        stations: int) -> tuple[list[tuple[str, str]], bool]:
    project = workload(work, days, stations)
    server = Server(cairn, project)
    seen: list[list[int]] = [[] for _ in range(subscribers)]
    ready = threading.Barrier(subscribers + 1)
    last_seq = [1 << 62]

    def subscriber(index: int) -> None:
        request = urllib.request.Request(server.url + "/v1/events")
        request.add_header("Authorization", f"Bearer {server.token}")
        request.add_header("Accept", "text/event-stream")
        with urllib.request.urlopen(request, timeout=3600) as stream:
            ready.wait()
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("id:"):
                    seen[index].append(int(line[3:].strip()))
                # On every line, the 15 s keep-alive comments too: a
                # subscriber that saw the last event before the build's
                # end was known would otherwise wait for an event that
                # never comes (the "stall" of 50 subscribers at 365x30).
                if seen[index] and seen[index][-1] >= last_seq[0]:
                    return

    def log_seqs() -> list[int]:
        # A reader beside the server, which holds the writer lock.
        out = subprocess.run([str(cairn), "log", "--json"], cwd=project, check=True,
                             capture_output=True, text=True).stdout
        return [json.loads(line)["seq"] for line in out.splitlines()]

    threads = [threading.Thread(target=subscriber, args=(i,), daemon=True)
               for i in range(subscribers)]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        status, operation = server.request("POST", "/v1/builds", {"refs": []})
        if status != 202:
            sys.exit(f"serve.py: POST /v1/builds: {status} {operation}")
        done = server.wait(operation["id"], pause=0.2)
        wall = time.perf_counter() - started
        expected = log_seqs()
        last_seq[0] = expected[-1]
        # One deadline for all: a subscriber still waiting then missed
        # events (it never saw the last one).
        deadline = time.monotonic() + 120
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        time.sleep(1)
        rss = server.rss_kib()
    finally:
        server.stop()
    missed = sum(1 for s in seen if s != expected)
    actions = (done.get("expected") or {}).get("actions", "?")
    return [
        (f"SSE: {subscribers} subscribers on a cold {days}x{stations} build ({actions} actions)",
         f"{len(expected)} events each; {missed} subscribers missed or reordered one"),
        ("that build through the server (wall)", f"{wall:.1f} s"),
        (f"server RSS, idle, {days}x{stations} store open", f"{rss / 1024:.1f} MiB"),
    ], missed > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cairn", default=str(REPO / "target/release/cairn"))
    parser.add_argument("--work", default=str(REPO / "target/bench-serve"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--sse-size", default="365x30")
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument("--only", choices=["round-trip", "overlap", "sse"],
                        help="run one of the benchmarks")
    args = parser.parse_args()
    cairn = Path(args.cairn).resolve()
    if not cairn.is_file():
        sys.exit(f"serve.py: no {cairn}: run `cargo build --release` first (or give --cairn)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = {args.only} if args.only else {"round-trip", "overlap", "sse"}
    if args.skip_sse:
        runs.discard("sse")
    rows: list[tuple[str, str]] = []
    bad = False
    if "round-trip" in runs:
        rows += round_trip(cairn, work, args.runs)
    if "overlap" in runs:
        overlap_rows, twice = overlap(cairn, work, args.clients)
        rows += overlap_rows
        bad = bad or twice
    if "sse" in runs:
        days, stations = (int(n) for n in args.sse_size.split("x"))
        sse_rows, missed = sse(cairn, work, args.subscribers, days, stations)
        rows += sse_rows
        bad = bad or missed
    load = os.getloadavg()[0]
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout
    fs_type = fs.splitlines()[-1].split()[1] if fs else "?"
    print(f"\nLoad average at the end: {load:.2f}; {os.cpu_count()} cores; {fs_type} on {work}\n")
    print("| case | result |\n| --- | --- |")
    for case, result in rows:
        print(f"| {case} | {result} |")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
