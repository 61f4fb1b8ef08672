from clawback.api import SSEParser, Usage, encode_event


def test_usage_reads_ttl_split_and_falls_back_to_5m():
    split = Usage.from_api(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "cache_read_input_tokens": 5,
            "output_tokens": 7,
        }
    )
    assert (split.cache_write_5m_input_tokens, split.cache_write_1h_input_tokens) == (10, 20)
    assert split.cache_creation_input_tokens == 30
    assert split.total_input_tokens == 45
    legacy = Usage.from_api({"input_tokens": 1, "cache_creation_input_tokens": 30, "output_tokens": 2})
    assert (legacy.cache_write_5m_input_tokens, legacy.cache_write_1h_input_tokens) == (30, 0)


def test_stream_usage_is_cumulative_last_value_wins():
    start = Usage.from_api({"input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 1})
    after_first_delta = start.updated({"output_tokens": 20})
    after_last_delta = after_first_delta.updated({"output_tokens": 42})
    assert after_last_delta.output_tokens == 42  # not 1 + 20 + 42
    assert after_last_delta.input_tokens == 100
    assert after_last_delta.cache_read_input_tokens == 50


def test_sse_parser_reassembles_events_split_anywhere():
    stream = encode_event("message_start", {"type": "message_start"}) + encode_event("ping", {"type": "ping"})
    stream += b": comment\r\n\r\n" + encode_event("message_stop", {"type": "message_stop"})
    for cut in range(1, len(stream)):
        parser = SSEParser()
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:]) + parser.flush()
        assert [e.event for e in events] == ["message_start", "ping", "message_stop"]
        assert events[1].json() == {"type": "ping"}


def test_sse_parser_can_skip_unwanted_events_without_losing_frames():
    frames = [
        encode_event("message_start", {"type": "message_start", "n": 1}),
        encode_event("content_block_delta", {"type": "content_block_delta", "text": "x" * 50}),
        encode_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    stream = b"".join(frames)
    for cut in range(1, len(stream)):
        parser = SSEParser(only=frozenset({"message_start", "message_delta"}))
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert [e.event for e in events] == ["message_start", "message_delta"]
        assert events[1].json()["usage"] == {"output_tokens": 9}
