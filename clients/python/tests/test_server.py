"""Tests against a real ``cairn serve``, which tests/python_client.rs (in
the cairn repository) starts on a loopback port of a podcast project and
names in the environment:

- ``CAIRN_TEST_URL``: the server's URL;
- ``CAIRN_TEST_TOKEN_FILE``: its token file;
- ``CAIRN_TEST_PROJECT``: the project directory. Its ``jobs/clean.sh``
  fails for station S while a file ``fail-S`` exists in the project, and
  sleeps a minute while ``slow-S`` exists; ``backfills/day1.toml`` is a
  checked-in backfill config of ``daily/date=2024-01-01``.

Without ``CAIRN_TEST_URL`` they are skipped (tests/python_client.rs
checks that none is skipped there).
"""

from __future__ import annotations

import os
import sys
import time
import unittest
from pathlib import Path
from typing import List

try:
    import cairn_client  # noqa: F401 - installed (tests/python_client.rs)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cairn_client import (  # noqa: E402
    ApiError,
    Client,
    OperationCancelled,
    OperationFailed,
    Progress,
)

URL = os.environ.get("CAIRN_TEST_URL", "")
TOKEN_FILE = os.environ.get("CAIRN_TEST_TOKEN_FILE", "")
PROJECT = Path(os.environ.get("CAIRN_TEST_PROJECT", "."))


@unittest.skipUnless(URL, "CAIRN_TEST_URL names no cairn serve")
class AgainstCairnServe(unittest.TestCase):
    def setUp(self) -> None:
        self.client = Client(URL, token_file=TOKEN_FILE)

    def test_a_build_with_an_idempotency_key_is_submitted_once(self) -> None:
        refs = ["clean/date=2024-01-01/station=S001"]
        first = self.client.submit_build(refs, idempotency_key="py-build-1")
        again = self.client.submit_build(refs, idempotency_key="py-build-1")
        self.assertEqual(first.id, again.id)
        self.assertEqual(first.kind, "build")
        with self.assertRaises(ApiError) as raised:
            self.client.submit_build(
                ["clean/date=2024-01-01/station=S002"], idempotency_key="py-build-1"
            )
        self.assertEqual(raised.exception.code, 422)
        seen: List[Progress] = []
        done = self.client.wait(first.id, on_progress=seen.append)
        self.assertEqual(done.state, "succeeded")
        self.assertTrue(done.done)
        # raw and clean of one station: two actions announced, two done.
        self.assertEqual(first.expected["actions"], 2)
        self.assertEqual(self.client.get(first.id).state, "succeeded")
        self.assertEqual([p.done for p in seen], [1, 2])
        self.assertEqual([p.total for p in seen], [2, 2])
        self.assertEqual(seen[-1].counts["executed"], 2)

    def test_a_checked_in_backfill_is_followed_with_progress_to_the_end(self) -> None:
        op = self.client.submit_backfill(config_path="backfills/day1.toml")
        self.assertEqual(op.kind, "backfill")
        seen: List[Progress] = []
        done = self.client.wait(op.id, on_progress=seen.append)
        self.assertEqual(done.state, "succeeded")
        total = op.expected["actions"]
        # raw and clean of two stations, and the day's daily: five actions.
        self.assertEqual(total, 5)
        # The actions current at submit (raw and clean of S001, built by
        # the build test before, if it ran first) are done from the start;
        # every other action was reported as it finished, up to the total.
        current = op.expected["current"]
        self.assertEqual([p.done for p in seen], list(range(current + 1, total + 1)))
        self.assertEqual(seen[-1].counts["cached"], current)
        self.assertTrue(all(p.total == total for p in seen))
        result = done.result or {}
        self.assertEqual(result.get("failed"), 0)

    def test_a_bad_backfill_config_is_refused_with_the_clis_message(self) -> None:
        with self.assertRaises(ApiError) as raised:
            self.client.submit_backfill(
                config='target = "nosuch/date={date}"\nreason = "r"\n',
                config_name="broken.toml",
            )
        self.assertEqual(raised.exception.code, 400)
        self.assertEqual(raised.exception.status, "INVALID_ARGUMENT")
        self.assertIn("nosuch", raised.exception.message)

    def test_a_failure_raises_with_the_failed_partition_and_its_log_tail(self) -> None:
        marker = PROJECT / "fail-S002"
        marker.write_text("")
        try:
            op = self.client.submit_build(["clean/date=2024-01-02/station=S002"])
            with self.assertRaises(OperationFailed) as raised:
                self.client.wait(op.id, poll=0.2)
        finally:
            marker.unlink()
        failure = raised.exception
        self.assertNotIsInstance(failure, OperationCancelled)
        self.assertEqual(failure.operation.state, "failed")
        partitions = [failed.partition for failed in failure.failed]
        self.assertIn("clean/date=2024-01-02/station=S002", partitions)
        tails = "\n".join(failed.log_tail for failed in failure.failed)
        self.assertIn("bad sensor S002", tails)
        self.assertIn("bad sensor S002", str(failure))

    def test_a_running_operation_is_cancelled(self) -> None:
        marker = PROJECT / "slow-S001"
        marker.write_text("")
        try:
            op = self.client.submit_build(["clean/date=2024-01-02/station=S001"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = self.client.get(op.id)
                if now.raw.get("running"):
                    break
                time.sleep(0.1)
            else:
                self.fail(f"operation {op.id} never ran its job")
            started = time.monotonic()
            self.client.cancel(op.id)
            with self.assertRaises(OperationCancelled) as raised:
                self.client.wait(op.id)
        finally:
            marker.unlink()
        self.assertEqual(raised.exception.operation.state, "cancelled")
        # The job sleeps a minute: the cancel stopped it.
        self.assertLess(time.monotonic() - started, 45)
        self.assertEqual(self.client.get(op.id).state, "cancelled")

    def test_retry_failed_submits_only_the_failed_partitions_then_nothing(self) -> None:
        # The third day is this test's alone (tests/python_client.rs).
        config = (
            'target = "daily/date={date}"\nreason = "py retry"\n\n'
            '[dimensions.date]\nstart = "2024-01-03"\nend = "2024-01-03"\n'
        )
        marker = PROJECT / "fail-S002"
        marker.write_text("")
        try:
            first = self.client.submit_backfill(config=config, config_name="day3.toml")
            with self.assertRaises(OperationFailed) as raised:
                self.client.wait(first.id, poll=0.2)
        finally:
            marker.unlink()
        self.assertEqual(
            [failed.partition for failed in raised.exception.failed],
            ["clean/date=2024-01-03/station=S002"],
        )
        # raw and clean of two stations and the day's daily.
        self.assertEqual(first.expected["actions"], 5)
        retry = self.client.retry_failed(config=config, config_name="day3.toml")
        assert retry is not None
        self.assertEqual(retry.kind, "backfill")
        self.assertIs(retry.raw["request"].get("retry_failed"), True)
        done = self.client.wait(retry.id)
        self.assertEqual(done.state, "succeeded")
        # What ran again: the failed clean of S002 and the daily it feeds
        # (skipped the first time); the rest was current.
        self.assertEqual(done.counts["executed"], 2, done.counts)
        self.assertEqual(done.counts["failed"], 0, done.counts)
        self.assertIsNone(self.client.retry_failed(config=config, config_name="day3.toml"))

    def test_a_bad_token_is_refused(self) -> None:
        with self.assertRaises(ApiError) as raised:
            Client(URL, token="0" * 64).submit_build(["clean/date=2024-01-01/station=S001"])
        self.assertEqual(raised.exception.code, 401)


if __name__ == "__main__":
    unittest.main()
