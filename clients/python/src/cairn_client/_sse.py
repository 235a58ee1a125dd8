"""Server-sent events (the WHATWG ``text/event-stream`` format)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Iterable, Iterator, Optional, Union


@dataclass(frozen=True)
class SseEvent:
    """One event: its ``event:`` name (``message`` when none), its data
    (``data:`` lines joined by newlines) and the last ``id:`` seen."""

    event: str
    data: str
    id: Optional[str]


def parse_events(lines: Union[IO[bytes], Iterable[bytes]]) -> Iterator[SseEvent]:
    """The events of a stream given as lines of bytes (a response object,
    a file, a list). A blank line ends an event; ``:`` starts a comment
    (the server's keep-alive); an event not ended by a blank line at the
    end of the stream is dropped, as the format says."""
    event = ""
    data: Optional[list[str]] = None
    last_id: Optional[str] = None
    for raw in lines:
        line = raw.decode("utf-8", errors="replace")
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        if line == "":
            if data is not None:
                yield SseEvent(event or "message", "\n".join(data), last_id)
            event, data = "", None
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            if data is None:
                data = []
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value
