"""Hard partitions and eligibility: what must match exactly before meaning is compared at all.

Partition. Only the *last user turn's text* is compared by meaning. Everything else must be identical, and is
hashed into the partition key with the exact cache's normalization (``exact_cache.normalized_request``, so the
two caches agree on what "identical" means): the tenant's scope (``Tenant.scope``: one tenant's entries are
never searched for another's request), the namespace, the ``anthropic-beta`` header, ``model``, ``system``,
``tools``, sampling parameters, ``max_tokens``, every other body field (unknown fields may change the answer),
the whole conversation before the last user turn, and the last turn's non-text blocks. Two requests in
different partitions can never match, whatever their similarity.

Eligibility (first rule that speaks wins, as in the exact cache): the ``x-clawback-cache`` header (``off``
also turns the semantic cache off for the request; ``refresh`` stores without looking up), then
``semantic_cache.keys``, ``semantic_cache.features``, ``semantic_cache.default_policy``. Never eligible,
whatever the policy: a last turn that is not the user's, or has no text, or is longer than
``max_query_chars``; tool results, images or documents in it unless ``allow_tool_results`` / ``allow_media``;
``max_tokens: 0``. An ineligible request is never embedded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from clawback.config import SemanticCacheSettings
from clawback.pipeline.context import RequestContext
from clawback.pipeline.exact_cache import CACHE_HEADER, normalized_request

__all__ = ["Eligibility", "eligibility", "partition_key", "split_last_turn"]

_ON = frozenset({"on", "true", "1", "yes"})
_OFF = frozenset({"off", "false", "0", "no", "bypass", "no-store"})
_MEDIA = frozenset({"image", "document", "file", "container_upload", "search_result"})


@dataclass(frozen=True, slots=True)
class Eligibility:
    mode: str
    """``"on"`` (look up and store), ``"refresh"`` (store only) or ``"off"``."""
    reason: str
    text: str | None = None


def split_last_turn(body: Mapping[str, Any]) -> tuple[str | None, list[Any]]:
    """The last user turn's text and its other blocks; ``(None, [])`` when the last message is not a user's."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, []
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None, []
    content = last.get("content")
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return None, []
    texts: list[str] = []
    others: list[Any] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        else:
            others.append(block)
    return ("\n".join(texts) if texts else None), others


def _policy(ctx: RequestContext, settings: SemanticCacheSettings) -> tuple[str, str]:
    header = (ctx.header(CACHE_HEADER) or "").strip().lower()
    if header in _ON:
        return "on", "header"
    if header == "refresh":
        return "refresh", "header"
    if header in _OFF:
        return "off", "header"
    tenant = ctx.tenant
    if tenant.key_id is not None and tenant.key_id in settings.keys:
        return ("on" if settings.keys[tenant.key_id] else "off"), "key"
    if tenant.feature is not None and tenant.feature in settings.features:
        return ("on" if settings.features[tenant.feature] else "off"), "feature"
    policy = settings.default_policy
    if policy == "all":
        return "on", "policy"
    if policy == "deterministic":
        temperature, top_k = ctx.body.get("temperature"), ctx.body.get("top_k")
        pinned = (isinstance(temperature, int | float) and temperature == 0) or top_k == 1
        return ("on", "policy") if pinned else ("off", "sampled")
    return "off", "policy"


def eligibility(ctx: RequestContext, settings: SemanticCacheSettings) -> Eligibility:
    """Whether this request may be answered from (or fill) the semantic cache; cheap, embeds nothing."""
    if ctx.endpoint != "messages" or ctx.body.get("max_tokens") == 0:
        return Eligibility("off", "endpoint")
    mode, reason = _policy(ctx, settings)
    if mode == "off":
        return Eligibility("off", reason)
    text, others = split_last_turn(ctx.body)
    if text is None or not text.strip():
        return Eligibility("off", "no_text")
    if len(text) > settings.max_query_chars:
        return Eligibility("off", "too_long")
    for block in others:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result" and not settings.allow_tool_results:
            return Eligibility("off", "tool_result")
        if kind in _MEDIA and not settings.allow_media:
            return Eligibility("off", "media")
        if kind not in ("tool_result", *_MEDIA):
            return Eligibility("off", "other_blocks")
    return Eligibility(mode, reason, text)


def partition_key(scope: str, namespace: str, body: Mapping[str, Any], beta: str | None) -> str:
    """32 hex characters naming everything but the last user turn's text (see the module docstring)."""
    normalized = normalized_request(body)
    messages = list(normalized.get("messages") or [])
    last = messages.pop() if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    others = [b for b in content if not (isinstance(b, dict) and b.get("type") == "text")] if isinstance(
        content, list) else []  # fmt: skip
    normalized["messages"] = messages
    normalized["last_turn_blocks"] = others
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"semantic\x00{scope}\x00{namespace}\x00{beta or ''}\x00".encode())
    hasher.update(orjson.dumps(normalized, option=orjson.OPT_SORT_KEYS))
    return hasher.hexdigest()
