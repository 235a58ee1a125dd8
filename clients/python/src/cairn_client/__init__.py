"""A client for the HTTP API of ``cairn serve`` (docs/api.md).

Submit a build or a backfill, follow it to completion with progress
callbacks, cancel it::

    from cairn_client import Client, OperationFailed

    client = Client("http://127.0.0.1:8080", token_file=".cairn/serve.token")
    op = client.submit_backfill(config_path="backfills/jan.toml",
                                idempotency_key="ci-run-1234")
    try:
        done = client.wait(op.id, on_progress=lambda p: print(p.done, "/", p.total))
    except OperationFailed as failure:
        for failed in failure.failed:
            print(failed.partition, failed.log_tail)
        raise

Standard library only (urllib, json).
"""

from ._client import (
    ApiError,
    CairnError,
    Client,
    FailedPartition,
    Operation,
    OperationCancelled,
    OperationFailed,
    Progress,
    ServerUnreachable,
)
from ._sse import SseEvent, parse_events

__all__ = [
    "ApiError",
    "CairnError",
    "Client",
    "FailedPartition",
    "Operation",
    "OperationCancelled",
    "OperationFailed",
    "Progress",
    "ServerUnreachable",
    "SseEvent",
    "parse_events",
]

__version__ = "0.1.0"
