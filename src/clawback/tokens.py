"""Deterministic token estimates for Messages API requests (what ``/v1/messages/count_tokens`` answers).

Why an estimate and not the real tokenizer: Anthropic does not publish Claude's tokenizer, and this code runs
on the gateway's hot path (budget reservations, the prompt-cache planner, the simulator's billing), so it must
be fast and give the same number for the same input every time. Text is split by one compiled regex into
word / number / punctuation / whitespace pieces, each counted as one token:

* a run of letters is one token per started 6 letters (most English words are one token, long words two);
* CJK ideographs, kana and hangul syllables are one token each;
* digits are grouped by three, punctuation (and ``_``) by three, runs of two to eight whitespace characters
  (indentation, blank lines) and every line break count one; a single space is absorbed by the next word.

It costs about 0.1 us per character (50 ms for a 750 kB novel; ASCII text twice as fast), and texts of 64
characters or more are memoized (bounded LRU, 64 M characters with a per-entry overhead counted), so a
conversation's unchanged history is counted once: its messages recur on every turn, and a 100-character message
costs ~5 us to count but ~0.3 us to look up (issue 19; the threshold was 2 kB, which left every ordinary chat
message counted afresh on every request).

Per-model factor: "Claude Opus 4.7 and later Opus models, Claude Fable 5, Claude Mythos 5, Claude Mythos
Preview, and Claude Sonnet 5 use a newer tokenizer. The same input text produces approximately 30% more tokens"
(https://platform.claude.com/docs/en/build-with-claude/token-counting). We apply ``NEW_TOKENIZER_FACTOR`` = 1.3
to text-derived counts for opus-4-7, opus-4-8, every 5.x family and mythos/fable; images are pixels, not text,
and are not scaled.

Fixed overheads (what the API adds around your content; all attributed to a block so that the prompt-cache
model can split a request into cached and uncached parts, see ``prompt_blocks``):

* ``MESSAGE_OVERHEAD`` = 4 tokens per message (the role header), carried by the message's first block;
* ``TAIL_OVERHEAD`` = 3 tokens after the last block (the assistant turn the model answers in); it always falls
  after the last cache breakpoint, i.e. in ``input_tokens``;
* the tool-use system prompt when ``tools`` is non-empty: the per-model table of
  https://platform.claude.com/docs/en/agents-and-tools/tool-use/overview#pricing (e.g. Opus 5: 286 tokens for
  ``tool_choice`` auto/none, 406 for any/tool), carried by the first tool;
* ``THINKING_OVERHEAD`` = 30 tokens when ``thinking`` is enabled/adaptive (the configuration "is rendered into
  the prompt", prompt-caching docs), carried by the first message block;
* thinking blocks of *previous* assistant turns count 0 ("Thinking blocks from previous assistant turns are
  ignored and do not count toward your input tokens", token-counting docs). A turn is previous once a later
  user message carries something other than ``tool_result`` blocks.

Images: "tokens = (width px * height px)/750" after the API's downscaling to a long edge of at most 1568 px and
about 1.15 megapixels (https://platform.claude.com/docs/en/build-with-claude/vision). Dimensions are read from
the PNG / GIF / WebP / JPEG header of base64 data (no full decode); when unknown (URL or file sources, or an
unparseable header) we use ``IMAGE_FALLBACK_TOKENS`` = 1,600, the documented figure for a maximum-size image.
PDFs: ``PDF_PAGE_TOKENS`` = 2,200 per page (the docs give 1,500-3,000 text tokens per page plus the page image;
2,200 fits the token-counting example), pages counted from ``/Type /Page`` objects.

How close these estimates come to Anthropic's published counts (and which figures were fitted on which
example): ``docs/tokens.md``; ``tests/unit/test_tokens.py::test_documented_examples`` holds each within its
measured error.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clawback.api.messages import content_blocks

__all__ = [
    "IMAGE_FALLBACK_TOKENS",
    "MESSAGE_OVERHEAD",
    "NEW_TOKENIZER_FACTOR",
    "PDF_PAGE_TOKENS",
    "TAIL_OVERHEAD",
    "THINKING_OVERHEAD",
    "PromptBlock",
    "count_request_tokens",
    "estimate_block_tokens",
    "estimate_text_tokens",
    "estimate_tool_tokens",
    "fast_tokens",
    "image_tokens",
    "message_prompt_blocks",
    "message_tokens_at_most",
    "prompt_blocks",
    "static_prompt_blocks",
    "tokenizer_factor",
    "tool_prompt_overhead",
]

NEW_TOKENIZER_FACTOR = 1.3
MESSAGE_OVERHEAD = 4
TAIL_OVERHEAD = 2
THINKING_OVERHEAD = 30
IMAGE_FALLBACK_TOKENS = 1600
IMAGE_MAX_EDGE = 1568
IMAGE_MAX_PIXELS = 1_150_000
PDF_PAGE_TOKENS = 2200
#: Fixed wrapper cost of structured blocks (tool_use / tool_result markup around their payload).
BLOCK_WRAPPER = 3
#: Characters per token for content we only measure by size (unknown blocks, encrypted payloads).
CHARS_PER_TOKEN = 4


def fast_tokens(chars: int, factor: float = 1.0) -> int:
    """The fast estimate of ``chars`` characters of text: characters / 4, scaled by the model's tokenizer
    ``factor``, rounded down. Pruning plans with it (thousands of blocks per request); the counter above is
    what bills are checked against."""
    return int(chars * factor / CHARS_PER_TOKEN)


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_PIECE = re.compile(
    rf"[^\W\d_{_CJK}]{{1,6}}"  # letters, 6 at a time
    r"|\s{2,8}|\n"  # indentation, blank lines, line breaks (a lone space is free)
    r"|(?:[^\w\s]|_){1,3}"  # punctuation, 3 at a time
    r"|\d{1,3}"  # digits, 3 at a time
    rf"|[{_CJK}]"  # one ideograph / kana / hangul syllable
)
#: The same rules for ASCII text, about twice as fast (no Unicode classes).
_PIECE_ASCII = re.compile(r"[A-Za-z]{1,6}|\s{2,8}|\n|[^A-Za-z0-9\s]{1,3}|\d{1,3}")

_MODEL = re.compile(r"claude-(opus|sonnet|haiku|fable|mythos)-(\d+)(?:-(\d{1,2}))?(?!\d)")
_LEGACY_MODEL = re.compile(r"claude-(\d)(?:-(\d))?-(opus|sonnet|haiku)")

#: Tool-use system prompt tokens (tool_choice auto/none, any/tool) per model, from the tool-use pricing table.
_TOOL_PROMPT: dict[tuple[str, int, int], tuple[int, int]] = {
    ("opus", 5, 0): (286, 406),
    ("sonnet", 5, 0): (354, 474),
    ("opus", 4, 8): (290, 410),
    ("opus", 4, 7): (675, 804),
    ("opus", 4, 6): (497, 589),
    ("sonnet", 4, 6): (497, 589),
    ("opus", 4, 5): (496, 588),
    ("sonnet", 4, 5): (496, 588),
    ("haiku", 4, 5): (496, 588),
    ("opus", 4, 1): (313, 315),
    ("opus", 4, 0): (313, 315),
    ("sonnet", 4, 0): (313, 315),
    ("haiku", 3, 5): (264, 355),
    ("sonnet", 3, 7): (346, 313),
    ("sonnet", 3, 5): (346, 313),
}
#: Families/versions without their own row: the nearest documented model of the same generation.
_TOOL_PROMPT_DEFAULT_5X_OPUS = (286, 406)
_TOOL_PROMPT_DEFAULT_5X_SONNET = (354, 474)
_TOOL_PROMPT_DEFAULT = (496, 588)

#: Documented fixed definition sizes of Anthropic-defined client tools (tool-use docs, per tool page).
_KNOWN_TOOL_TOKENS = {"bash_": 245, "text_editor_": 700, "computer_": 683}

_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


@functools.lru_cache(maxsize=1024)  # pure; asked per block of every request
def _parse_model(model: str | None) -> tuple[str, int, int] | None:
    """``(family, major, minor)`` for a Claude model id; a date suffix is not a minor version."""
    if not model:
        return None
    match = _MODEL.search(model)
    if match:
        return match.group(1), int(match.group(2)), int(match.group(3) or 0)
    legacy = _LEGACY_MODEL.search(model)
    if legacy:
        return legacy.group(3), int(legacy.group(1)), int(legacy.group(2) or 0)
    return None


@functools.lru_cache(maxsize=1024)  # pure; asked per block of every request
def tokenizer_factor(model: str | None) -> float:
    """1.3 for models on the newer tokenizer (Opus 4.7+, every 5.x family, Fable, Mythos), else 1.0."""
    if model and ("mythos" in model or "fable" in model):
        return NEW_TOKENIZER_FACTOR
    parsed = _parse_model(model)
    if parsed is None:
        return 1.0
    family, major, minor = parsed
    if major >= 5 or (family == "opus" and major == 4 and minor >= 7):
        return NEW_TOKENIZER_FACTOR
    return 1.0


def _scaled(pieces: int, factor: float) -> int:
    return pieces if factor == 1.0 else math.ceil(pieces * factor)


#: Texts recur on every turn of a conversation (system prompt, tools, history): remember their counts. Shorter
#: texts are counted directly: below ~64 characters the lookup saves little over the regex.
_MEMO: OrderedDict[str, int] = OrderedDict()
_MEMO_MIN_CHARS = 64
_MEMO_MAX_CHARS = 64 * 1024 * 1024
#: What an entry costs beyond its characters (dict slot, str header, the int), in the same budget.
_MEMO_ENTRY_CHARS = 128
_memo_chars = 0


def _pieces(text: str) -> int:
    """Number of pieces in ``text`` (``subn`` counts matches without building a list of them)."""
    global _memo_chars
    if len(text) < _MEMO_MIN_CHARS:
        return (_PIECE_ASCII if text.isascii() else _PIECE).subn("", text)[1] if text else 0
    cached = _MEMO.get(text)
    if cached is not None:
        _MEMO.move_to_end(text)
        return cached
    count = (_PIECE_ASCII if text.isascii() else _PIECE).subn("", text)[1]
    _MEMO[text] = count
    _memo_chars += len(text) + _MEMO_ENTRY_CHARS
    while _memo_chars > _MEMO_MAX_CHARS and _MEMO:
        evicted, _ = _MEMO.popitem(last=False)
        _memo_chars -= len(evicted) + _MEMO_ENTRY_CHARS
    return count


def estimate_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of a piece of text on ``model``'s tokenizer (see the module docstring for the rules)."""
    return _scaled(_pieces(text), tokenizer_factor(model))


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _size_tokens(value: Any) -> int:
    """Tokens of content we only know by its serialized size."""
    return math.ceil(len(_json_text(value)) / CHARS_PER_TOKEN)


# -- images ----------------------------------------------------------------------------------------------


def _image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF, WebP or JPEG file, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if kind == b"VP8L" and len(head) >= 25:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


#: Base64 characters decoded to find an image header: JPEG frames usually follow the EXIF block (< 64 KiB).
_IMAGE_HEAD_B64 = 96 * 1024


def image_tokens(width: int, height: int) -> int:
    """Tokens of a ``width`` x ``height`` image after the API's documented downscaling."""
    if width <= 0 or height <= 0:
        return IMAGE_FALLBACK_TOKENS
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height), math.sqrt(IMAGE_MAX_PIXELS / (width * height)))
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    return max(1, math.ceil(w * h / 750))


def _base64_head(data: str, limit: int) -> bytes:
    chunk = data[: limit - limit % 4]
    if chunk.startswith("data:"):
        chunk = chunk.partition(",")[2]
        chunk = chunk[: len(chunk) - len(chunk) % 4]
    try:
        return base64.b64decode(chunk, validate=False)
    except ValueError:
        return b""


def _image_block_tokens(block: Mapping[str, Any]) -> int:
    source = block.get("source")
    if isinstance(source, Mapping) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        size = _image_size(_base64_head(source["data"], _IMAGE_HEAD_B64))
        if size is not None:
            return image_tokens(*size)
    return IMAGE_FALLBACK_TOKENS


# -- documents -------------------------------------------------------------------------------------------

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
#: Above this many base64 characters we estimate pages from size instead of decoding (hot path).
_PDF_DECODE_LIMIT = 8 * 1024 * 1024
#: Bytes per page when the page objects are compressed away (object streams) or the file is huge.
_PDF_BYTES_PER_PAGE = 60_000


def _pdf_pages(data: str) -> int:
    if len(data) <= _PDF_DECODE_LIMIT:
        raw = _base64_head(data, len(data) + 4)
        pages = len(_PDF_PAGE.findall(raw))
        if pages:
            return pages
        return max(1, len(raw) // _PDF_BYTES_PER_PAGE)
    return max(1, (len(data) * 3 // 4) // _PDF_BYTES_PER_PAGE)


def _document_block_tokens(block: Mapping[str, Any], model: str | None) -> int:
    tokens = 0
    for field in ("title", "context"):
        value = block.get(field)
        if isinstance(value, str):
            tokens += estimate_text_tokens(value, model)
    source = block.get("source")
    if not isinstance(source, Mapping):
        return tokens + PDF_PAGE_TOKENS
    kind = source.get("type")
    data = source.get("data")
    if kind == "text" and isinstance(data, str):
        return tokens + estimate_text_tokens(data, model)
    if kind == "base64" and isinstance(data, str):
        if str(source.get("media_type", "")).startswith("text/"):
            return tokens + estimate_text_tokens(_base64_head(data, len(data) + 4).decode(errors="replace"), model)
        return tokens + _pdf_pages(data) * PDF_PAGE_TOKENS
    if kind == "content":
        return tokens + _content_tokens(source.get("content"), model)
    return tokens + PDF_PAGE_TOKENS  # url / file: one page, we cannot see it


def _content_tokens(content: Any, model: str | None) -> int:
    """A ``content`` field that is a string or a list of blocks (tool_result, search_result, documents)."""
    if isinstance(content, str):
        return estimate_text_tokens(content, model)
    if isinstance(content, list):
        return sum(estimate_block_tokens(b, model) for b in content if isinstance(b, Mapping))
    if content is None:
        return 0
    return _size_tokens(content)


# -- blocks and tools -----------------------------------------------------------------------------------


def estimate_block_tokens(block: Mapping[str, Any], model: str | None = None) -> int:
    """Tokens of one content block, without the per-message overhead.

    Text by its text; images by their pixels; documents by pages or text; ``tool_use`` (and server / MCP tool
    uses) by name and JSON input; ``tool_result`` and ``*_tool_result`` by their content; thinking by its text,
    redacted thinking by its size; anything else by the size of its JSON.
    """
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return estimate_text_tokens(text, model) if isinstance(text, str) else 0
    if kind == "image":
        return _image_block_tokens(block)
    if kind == "document":
        return _document_block_tokens(block, model)
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        text = f"{block.get('name', '')} {_json_text(block.get('input', {}))}"
        return BLOCK_WRAPPER + estimate_text_tokens(text, model)
    if kind == "tool_result" or kind == "mcp_tool_result":
        return BLOCK_WRAPPER + _content_tokens(block.get("content"), model)
    if kind == "thinking":
        thinking = block.get("thinking")
        return estimate_text_tokens(thinking, model) if isinstance(thinking, str) else 0
    if kind == "redacted_thinking":
        return _size_tokens(block.get("data", ""))
    if kind == "search_result":
        text = f"{block.get('title', '')} {block.get('source', '')}"
        return estimate_text_tokens(text, model) + _content_tokens(block.get("content"), model)
    if isinstance(kind, str) and kind.endswith("_tool_result"):
        return BLOCK_WRAPPER + _content_tokens(block.get("content"), model)
    return _size_tokens({k: v for k, v in block.items() if k != "cache_control"})


def estimate_tool_tokens(tool: Mapping[str, Any], model: str | None = None) -> int:
    """Tokens of one tool definition (without the tool-use system prompt, see ``tool_prompt_overhead``).

    Custom tools: name, description and the JSON input schema. Anthropic-defined tools with a documented size
    (bash, text editor, computer use) use it; other server tools (web search, code execution...) are measured
    by the JSON of their definition.
    """
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "custom":
        for prefix, tokens in _KNOWN_TOOL_TOKENS.items():
            if kind.startswith(prefix):
                return tokens
        return _size_tokens({k: v for k, v in tool.items() if k != "cache_control"})
    parts = [str(tool.get("name", "")), str(tool.get("description", "")), _json_text(tool.get("input_schema", {}))]
    return BLOCK_WRAPPER + estimate_text_tokens(" ".join(parts), model)


def tool_prompt_overhead(model: str | None, tool_choice: Any = None) -> int:
    """The tool-use system prompt the API adds when at least one tool is given (per model and tool_choice)."""
    parsed = _parse_model(model)
    if parsed is None:
        pair = _TOOL_PROMPT_DEFAULT
    else:
        family, major, minor = parsed
        pair = (
            _TOOL_PROMPT.get((family, major, minor))
            or _TOOL_PROMPT.get((family, major, 0))
            or (
                (_TOOL_PROMPT_DEFAULT_5X_SONNET if family in ("sonnet", "haiku") else _TOOL_PROMPT_DEFAULT_5X_OPUS)
                if major >= 5
                else _TOOL_PROMPT_DEFAULT
            )
        )
    choice = tool_choice.get("type") if isinstance(tool_choice, Mapping) else None
    return pair[1] if choice in ("any", "tool") else pair[0]


# -- whole requests --------------------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 us more per block, on every request's every block
class PromptBlock:
    """One block of the prompt in cache-prefix order, with the tokens it accounts for.

    ``tokens`` includes the fixed overheads this block carries (message header, tool prompt, thinking
    configuration), so that the tokens of all blocks plus ``tail`` is exactly ``count_request_tokens``.
    """

    section: str  # "tools", "system" or "messages"
    block: Mapping[str, Any]
    path: str  # where the block sits in the body, for error messages: "messages.2.content.0"
    role: str | None
    first_in_message: bool
    tokens: int
    message_fields: bytes = b""
    """The message's own fields besides ``role`` and ``content`` (a system message's ``output_config`` or
    ``clear_at``), as JSON, on its first block (a message without blocks passes them on, like its header): they
    are rendered with the message, so they are part of the cached prefix from there on."""


def _thinking_enabled(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def _new_human_turn(message: Mapping[str, Any]) -> bool:
    """A user message that carries anything but tool results starts a new turn."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return True
    return any(b.get("type") != "tool_result" for b in content_blocks(message))


def prompt_blocks(body: Mapping[str, Any]) -> tuple[list[PromptBlock], int]:
    """Every block of the prompt (the order of ``iter_prompt_blocks``) with its tokens, and the tail tokens.

    ``sum(b.tokens for b in blocks) + tail == count_request_tokens(body)``: the prompt-cache simulator splits
    exactly this total into cache reads, cache writes and uncached input. Overheads are carried by the next
    block that follows them (a message with empty content passes its header on), or by the tail.
    """
    messages, tail = message_prompt_blocks(body)
    return static_prompt_blocks(body) + messages, tail


def static_prompt_blocks(body: Mapping[str, Any]) -> list[PromptBlock]:
    """The blocks of ``tools`` and ``system``, the prefix that does not depend on the messages (``prompt_blocks``'
    first blocks). Their tokens read only ``model``, ``tools``, ``tool_choice`` and ``system``; every overhead
    they owe is carried by one of them, so the messages' blocks start owing nothing."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    out: list[PromptBlock] = []
    tools = body.get("tools")
    tool_list = [(i, t) for i, t in enumerate(tools) if isinstance(t, dict)] if isinstance(tools, list) else []
    pending = tool_prompt_overhead(model, body.get("tool_choice")) if tool_list else 0
    for i, tool in tool_list:
        out.append(PromptBlock("tools", tool, f"tools.{i}", None, False, estimate_tool_tokens(tool, model) + pending))
        pending = 0
    system = body.get("system")
    if isinstance(system, str):
        if system:  # one text block, as ``MessagesRequest.system_blocks`` reads it
            block = {"type": "text", "text": system}
            out.append(PromptBlock("system", block, "system", None, False, estimate_block_tokens(block, model)))
    elif isinstance(system, list):
        for i, block in enumerate(system):
            if isinstance(block, dict):
                out.append(
                    PromptBlock("system", block, f"system.{i}", None, False, estimate_block_tokens(block, model))
                )
    return out


def message_prompt_blocks(body: Mapping[str, Any]) -> tuple[list[PromptBlock], int]:
    """The blocks of ``messages`` (``prompt_blocks``' last blocks) with their tokens, and the tail tokens."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    out: list[PromptBlock] = []
    pending = THINKING_OVERHEAD if _thinking_enabled(body) else 0
    messages = body.get("messages")
    message_list = list(enumerate(messages)) if isinstance(messages, list) else []
    # Thinking of assistant turns before the last human turn is ignored by the API.
    last_turn = next(
        (m for m, msg in reversed(message_list) if isinstance(msg, dict) and _new_human_turn(msg)), -1
    )  # the last one: scanned from the end, where it almost always is
    fields = b""
    for m, message in message_list:
        if not isinstance(message, dict):
            continue
        pending += MESSAGE_OVERHEAD
        role = message.get("role") if isinstance(message.get("role"), str) else None
        if len(message) > 2 or "role" not in message or "content" not in message:  # rare: skip the dict walk
            extra = {k: v for k, v in message.items() if k != "role" and k != "content"}
            if extra:
                fields += orjson.dumps(extra, default=str)
        content = message.get("content")
        if isinstance(content, str):
            located = [(f"messages.{m}.content", block) for block in content_blocks(message)]
        elif isinstance(content, list):
            located = [(f"messages.{m}.content.{j}", b) for j, b in enumerate(content) if isinstance(b, dict)]
        else:
            located = []
        for j, (path, block) in enumerate(located):
            dropped = block.get("type") in _THINKING_TYPES and role == "assistant" and m < last_turn
            tokens = (0 if dropped else estimate_block_tokens(block, model)) + pending
            out.append(PromptBlock("messages", block, path, role, j == 0, tokens, fields))
            pending = 0
            fields = b""
    return out, pending + TAIL_OVERHEAD


def message_tokens_at_most(body: Mapping[str, Any]) -> int | None:
    """An upper bound of the tokens ``message_prompt_blocks`` gives the messages' blocks (their overheads
    included), found without counting text: a text has at most one piece per character (every piece is at least
    one character), so at most ``len(text)`` pieces, scaled by the tokenizer as a count is; any other block is
    estimated as ``message_prompt_blocks`` does. None when a block carries ``cache_control``: a caller asking
    whether the prompt is too short to cache needs no bound then."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    factor = tokenizer_factor(model)
    total = THINKING_OVERHEAD if _thinking_enabled(body) else 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            total += _scaled(len(content), factor)
            continue
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            if "cache_control" in block:
                return None
            text = block.get("text")
            if block.get("type") == "text" and isinstance(text, str):
                total += _scaled(len(text), factor)
            else:
                total += estimate_block_tokens(block, model)
    return total


def count_request_tokens(body: Mapping[str, Any]) -> int:
    """What ``POST /v1/messages/count_tokens`` returns for ``body``: tools, system and messages, plus the
    fixed overheads documented in this module."""
    blocks, tail = prompt_blocks(body)
    return sum(b.tokens for b in blocks) + tail
