"""Server-sent events: an encoder and an incremental parser.

The Messages API streams ``event: <name>\\ndata: <json>\\n\\n`` frames. The gateway relays them as they
arrive (Claude Code aborts a stream that stays silent for 300 s), so the parser takes bytes in whatever
chunks the network delivers and yields whole events without waiting for the end of the stream. It keeps
each event's raw bytes so a relay can forward them untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["SSEParser", "ServerSentEvent", "encode_event"]


def encode_event(event: str, data: Any) -> bytes:
    """One SSE frame. ``data`` is JSON-encoded unless it is already ``bytes``."""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


@dataclass(slots=True)
class ServerSentEvent:
    event: str
    data: str
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.data) if self.data else None


class SSEParser:
    """Feed bytes, get complete events. Handles ``\\n``, ``\\r\\n`` and ``\\r`` line endings.

    ``only`` names the events the caller wants: others are skipped without being decoded. The gateway's
    relay reads usage from ``message_start``/``message_delta``/``error`` and nothing else, and decoding every
    ``content_block_delta`` was a tenth of its CPU on streams.
    """

    def __init__(self, only: frozenset[str] | None = None) -> None:
        self._buffer = b""
        self._only = tuple(b"event: " + name.encode() + b"\n" for name in only) if only is not None else None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[ServerSentEvent] = []
        start = 0
        only = self._only
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            # A frame in another shape than the API's ``event: <name>`` first is always parsed.
            if only is None or not buffer.startswith(b"event: ", start) or buffer.startswith(only, start):
                event = self._parse_frame(buffer[start:end])
                if event is not None:
                    events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[ServerSentEvent]:
        """Parse whatever is left when the stream ends without a trailing blank line."""
        rest, self._buffer = self._buffer.strip(b"\n"), b""
        event = self._parse_frame(rest) if rest else None
        return [event] if event is not None else []

    @staticmethod
    def _parse_frame(frame: bytes) -> ServerSentEvent | None:
        name = "message"
        data_lines: list[str] = []
        for line in frame.decode("utf-8").split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data_lines.append(value)
        if not data_lines and name == "message":
            return None
        return ServerSentEvent(event=name, data="\n".join(data_lines), raw=frame + b"\n\n")
