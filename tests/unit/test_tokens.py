import base64
import math
import struct
import time
from typing import Any

import pytest

from clawback.api.messages import iter_prompt_blocks
from clawback.tokens import (
    IMAGE_FALLBACK_TOKENS,
    PDF_PAGE_TOKENS,
    THINKING_OVERHEAD,
    count_request_tokens,
    estimate_block_tokens,
    estimate_text_tokens,
    estimate_tool_tokens,
    image_tokens,
    prompt_blocks,
    tokenizer_factor,
    tool_prompt_overhead,
)

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        },
        "required": ["location"],
    },
}


def _png(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height)
    return base64.b64encode(header + b"\x08\x02\x00\x00\x00").decode()


def _jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return base64.b64encode(b"\xff\xd8" + app0 + sof0 + b"\xff\xd9").decode()


def _after_breakpoint(model: str, text: str) -> int:
    """``input_tokens`` of a request whose system prompt is cached: the message and the fixed overheads."""
    body = {
        "model": model,
        "system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": text}],
    }
    blocks, tail = prompt_blocks(body)
    return blocks[-1].tokens + tail


# Published figures (see the module docstring for sources) and the error we measured on each, rounded up.
DOC_EXAMPLES: list[tuple[str, Any, int, float]] = [
    (
        "count_tokens basic",
        {
            "model": "claude-sonnet-4-5",
            "system": "You are a scientist",
            "messages": [{"role": "user", "content": "Hello, Claude"}],
        },
        14,
        0.01,
    ),
    (
        "count_tokens with tools",
        {
            "model": "claude-3-7-sonnet-20250219",
            "tools": [WEATHER_TOOL],
            "messages": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
        },
        403,
        0.06,
    ),
    (
        "count_tokens with thinking",
        {
            "model": "claude-sonnet-4-6",
            "thinking": {"type": "enabled", "budget_tokens": 16000},
            "messages": [
                {
                    "role": "user",
                    "content": "Are there an infinite number of prime numbers such that n mod 4 == 3?",
                },
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "thinking",
                            "thinking": "This is a nice number theory question. Let's think about it step by step...",
                            "signature": "EuYBCkQYAiJAgCs1le6/Pol5Z4/JMomVOouGrWdhYNsH3ukzUECbB6iWrSQtsQuRHJID6lWV...",
                        },
                        {
                            "type": "text",
                            "text": "Yes, there are infinitely many prime numbers p such that p mod 4 = 3...",
                        },
                    ],
                },
                {"role": "user", "content": "Can you write a formal proof?"},
            ],
        },
        88,
        0.01,
    ),
    (
        "count_tokens with an image",
        {
            "model": "claude-sonnet-4-5",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": _png(2000, 1500)},
                        },
                        {"type": "text", "text": "Describe this image"},
                    ],
                }
            ],
        },
        1551,
        0.01,
    ),
]


@pytest.mark.parametrize(("name", "body", "published", "tolerance"), DOC_EXAMPLES, ids=[e[0] for e in DOC_EXAMPLES])
def test_documented_examples(name: str, body: dict[str, Any], published: int, tolerance: float) -> None:
    got = count_request_tokens(body)
    assert abs(got - published) <= max(1, math.ceil(published * tolerance)), (name, got, published)


def test_documented_usage_examples_from_prompt_caching() -> None:
    # "Analyze the major themes..." -> input_tokens 21 (measured -14.3 %); pre-warm "warmup" on Opus 5 -> 8.
    assert (
        abs(_after_breakpoint("claude-3-5-sonnet-20240620", "Analyze the major themes in 'Pride and Prejudice'.") - 21)
        <= 3
    )
    assert abs(_after_breakpoint("claude-opus-5", "warmup") - 8) <= 1


def test_long_prose_matches_the_published_novel_count_within_five_percent() -> None:
    # Same density as the novel: 188,086 tokens for ~766 kB; a page of ordinary prose must land near 4 chars/token.
    prose = (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding "
        "families, that he is considered the rightful property of some one or other of their daughters.\n"
    ) * 50
    chars_per_token = len(prose) / estimate_text_tokens(prose)
    assert 3.5 <= chars_per_token <= 5.0


def test_estimates_are_deterministic_and_zero_for_nothing() -> None:
    text = "def f(x):\n    return {'a': [1, 2, 3]}  # 日本語のテキスト"
    assert estimate_text_tokens(text) == estimate_text_tokens(text) > 0
    assert estimate_text_tokens("") == 0
    assert estimate_block_tokens({"type": "text", "text": ""}) == 0
    long = "lorem ipsum dolor sit amet " * 1000  # memoized path
    assert estimate_text_tokens(long) == estimate_text_tokens(long) == 5000


def test_cjk_counts_one_token_per_character() -> None:
    assert estimate_text_tokens("日本語") == 3


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("claude-opus-4-7", 1.3),
        ("claude-opus-4-8", 1.3),
        ("claude-opus-5", 1.3),
        ("claude-opus-5-5", 1.3),
        ("claude-sonnet-5-5", 1.3),
        ("claude-haiku-5-5", 1.3),
        ("claude-fable-5-1", 1.3),
        ("claude-mythos-preview", 1.3),
        ("claude-opus-4-6", 1.0),
        ("claude-sonnet-4-6", 1.0),
        ("claude-haiku-4-5", 1.0),
        ("claude-opus-4-20250514", 1.0),
        ("claude-3-7-sonnet-20250219", 1.0),
        (None, 1.0),
    ],
)
def test_newer_tokenizer_factor(model: str | None, factor: float) -> None:
    assert tokenizer_factor(model) == factor


def test_newer_tokenizer_counts_about_thirty_percent_more() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    old, new = estimate_text_tokens(text, "claude-sonnet-4-6"), estimate_text_tokens(text, "claude-opus-4-8")
    assert new == math.ceil(old * 1.3)


def test_image_tokens_follow_the_documented_formula_and_downscaling() -> None:
    assert image_tokens(200, 200) == 54  # documented ~54
    assert image_tokens(1000, 1000) == 1334  # documented ~1334
    assert image_tokens(4000, 3000) == image_tokens(8000, 6000) <= 1600  # scaled to the size limit
    assert image_tokens(100, 3000) == math.ceil(52 * 1568 / 750)  # long edge limited to 1568 px


@pytest.mark.parametrize("data", [_png(640, 480), _jpeg(640, 480)])
def test_image_size_is_read_from_base64_headers(data: str) -> None:
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    assert estimate_block_tokens(block) == math.ceil(640 * 480 / 750)


def test_gif_and_webp_headers() -> None:
    gif = base64.b64encode(b"GIF89a" + struct.pack("<HH", 300, 200) + b"\x00" * 8).decode()
    vp8x = b"RIFF" + b"\x00" * 4 + b"WEBPVP8X" + b"\x00" * 8 + (299).to_bytes(3, "little") + (199).to_bytes(3, "little")
    webp = base64.b64encode(vp8x).decode()
    for data in (gif, webp):
        block = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": data}}
        assert estimate_block_tokens(block) == math.ceil(300 * 200 / 750)


def test_image_without_known_size_uses_the_documented_fixed_figure() -> None:
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
    junk = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "bm90IGFuIGltYWdl"}}
    assert estimate_block_tokens(url) == estimate_block_tokens(junk) == IMAGE_FALLBACK_TOKENS


def test_pdf_pages_are_counted() -> None:
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Pages /Count 3 >>\n" + b"2 0 obj << /Type /Page >>\n" * 3 + b"%%EOF"
    block = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()},
    }
    assert estimate_block_tokens(block) == 3 * PDF_PAGE_TOKENS
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Hello, world"}}
    assert estimate_block_tokens(text_doc) == estimate_text_tokens("Hello, world")


def test_tool_blocks_thinking_server_and_unknown_blocks() -> None:
    use = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"location": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "15 degrees"}]}
    assert estimate_block_tokens(use) > estimate_text_tokens("get_weather Paris")
    assert estimate_block_tokens(result) == 3 + estimate_text_tokens("15 degrees")
    assert estimate_block_tokens({"type": "thinking", "thinking": "hmm, let me see"}) == estimate_text_tokens(
        "hmm, let me see"
    )
    assert estimate_block_tokens({"type": "redacted_thinking", "data": "x" * 400}) == 100
    server = {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [{"type": "web_search_result"}]}
    assert estimate_block_tokens(server) > 3
    unknown = {"type": "brand_new_block", "payload": "y" * 100, "cache_control": {"type": "ephemeral"}}
    assert estimate_block_tokens(unknown) == math.ceil(
        len('{"type":"brand_new_block","payload":"' + "y" * 100 + '"}') / 4
    )


def test_tool_definitions_and_tool_prompt_overhead() -> None:
    assert estimate_tool_tokens(WEATHER_TOOL) > 20
    assert estimate_tool_tokens({"type": "bash_20250124", "name": "bash"}) == 245
    assert tool_prompt_overhead("claude-opus-5") == 286
    assert tool_prompt_overhead("claude-opus-5", {"type": "any"}) == 406
    assert tool_prompt_overhead("claude-sonnet-4-6", {"type": "tool", "name": "x"}) == 589
    assert tool_prompt_overhead("claude-opus-4-7") == 675
    no_tools = {"model": "claude-opus-5", "messages": [{"role": "user", "content": "hi"}]}
    with_tools = {**no_tools, "tools": [WEATHER_TOOL]}
    assert count_request_tokens(with_tools) - count_request_tokens(no_tools) == 286 + estimate_tool_tokens(
        WEATHER_TOOL, "claude-opus-5"
    )


def test_thinking_of_previous_turns_is_ignored_but_the_current_tool_loop_counts() -> None:
    thinking = {"type": "thinking", "thinking": "a long chain of thought " * 20, "signature": "s"}
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    loop = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [thinking, use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ],
    }
    without = {**loop, "messages": [loop["messages"][0], {"role": "assistant", "content": [use]}, loop["messages"][2]]}
    assert count_request_tokens(loop) == count_request_tokens(without) + estimate_block_tokens(thinking)
    later = {
        **loop,
        "messages": [*loop["messages"], {"role": "assistant", "content": "done"}, {"role": "user", "content": "next"}],
    }
    later_without = {**without, "messages": [*without["messages"], *later["messages"][3:]]}
    assert count_request_tokens(later) == count_request_tokens(later_without)
    enabled = {**loop, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert count_request_tokens(enabled) == count_request_tokens(loop) + THINKING_OVERHEAD


def test_prompt_blocks_follow_iter_prompt_blocks_and_add_up() -> None:
    body = {
        "model": "claude-opus-5",
        "tools": [WEATHER_TOOL, {"name": "t2", "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": "sys one"}, {"type": "text", "text": "sys two"}],
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": []},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
    }
    blocks, tail = prompt_blocks(body)
    assert [(b.section, b.block) for b in blocks] == list(iter_prompt_blocks(body))
    assert [b.path for b in blocks] == [
        "tools.0",
        "tools.1",
        "system.0",
        "system.1",
        "messages.0.content",
        "messages.2.content.0",
        "messages.2.content.1",
    ]
    assert sum(b.tokens for b in blocks) + tail == count_request_tokens(body)


def test_fast_enough_for_the_hot_path() -> None:
    text = "Some ordinary English prose, with punctuation; and numbers like 12345. " * 15_000  # ~1 MB
    start = time.perf_counter()
    estimate_text_tokens(text + "!")
    assert time.perf_counter() - start < 1.0
