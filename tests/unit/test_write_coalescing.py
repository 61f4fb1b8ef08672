"""``CoalescingTransport``: the writes of one loop turn leave as one, and nothing else about the transport changes."""

from __future__ import annotations

import asyncio
from typing import Any

from clawback.write_coalescing import FLUSH_AT, CoalescingTransport


class FakeTransport:
    """Records what reaches the socket: each ``write`` / ``writelines`` is one system call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, pieces: list[bytes]) -> None:
        self.calls.append(("writelines", list(pieces)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close",))
        self.closing = True

    def pause_reading(self) -> None:
        self.calls.append(("pause_reading",))

    def resume_reading(self) -> None:
        self.calls.append(("resume_reading",))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


def _run(body: Any) -> FakeTransport:
    async def main() -> FakeTransport:
        fake = FakeTransport()
        await body(CoalescingTransport(fake, asyncio.get_running_loop()), fake)  # type: ignore[arg-type]
        return fake

    return asyncio.run(main())


def test_writes_of_one_turn_leave_together_at_its_end() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert fake.calls == []  # held until the turn ends
        await asyncio.sleep(0)
        assert fake.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]  # small: joined
        t.write(b"next")  # a later turn: its own system call, a single piece written as is
        await asyncio.sleep(0)
        assert fake.calls[1:] == [("write", b"next")]

    _run(body)


def test_a_large_or_fast_producer_is_written_at_once_so_flow_control_sees_it() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(b"head")
        t.write(b"x" * (FLUSH_AT - 4))  # reaches the high-water mark: to the socket now, not at the turn's end
        assert fake.calls == [("writelines", [b"head", b"x" * (FLUSH_AT - 4)])]  # large: one writev, no copy
        t.write(b"y")
        assert len(fake.calls) == 1
        await asyncio.sleep(0)
        assert fake.calls[1:] == [("write", b"y")]
        await asyncio.sleep(0)  # the turn's flush scheduled by the first write finds nothing: no empty write
        assert len(fake.calls) == 2

    _run(body)


def test_close_sends_what_is_pending_first_and_a_closing_transport_gets_nothing() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(b"last")
        t.close()
        assert fake.calls == [("write", b"last"), ("close",)]
        t.write(b"after close")  # e.g. a disconnected client: dropped, as the closed socket would
        await asyncio.sleep(0)
        assert fake.calls == [("write", b"last"), ("close",)]
        assert t.is_closing()

    _run(body)


def test_empty_writes_and_the_rest_of_the_transport() -> None:
    async def body(t: CoalescingTransport, fake: FakeTransport) -> None:
        t.write(b"")
        await asyncio.sleep(0)
        assert fake.calls == []
        t.pause_reading()
        t.resume_reading()
        assert t.get_extra_info("peername") == ("127.0.0.1", 1234)  # anything else is the transport's own
        assert fake.calls == [("pause_reading",), ("resume_reading",)]

    _run(body)
