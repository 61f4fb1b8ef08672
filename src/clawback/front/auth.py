"""Who is calling, and with which credentials the gateway calls upstream.

Clients present a clawback key (``x-api-key: cb-…`` or ``Authorization: Bearer cb-…``, which is what the
SDKs and Claude Code send when ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_AUTH_TOKEN`` hold it). The real Anthropic
key stays in the gateway's configuration. In pass-through mode a client may send its own Anthropic key
instead: it is forwarded as sent, and the ledger labels it by a hash, never by the key itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from clawback.api.errors import AuthenticationError, OverloadedError
from clawback.config import GatewaySettings
from clawback.pipeline.context import Tenant
from clawback.storage.keys import KEY_PREFIX, KeyStore, KeysUnavailable

__all__ = ["Authenticator"]

# Claude Code's documented gateway headers; recorded as tenant labels.
SESSION_HEADER = "x-claude-code-session-id"
AGENT_HEADER = "x-claude-code-agent-id"
PARENT_AGENT_HEADER = "x-claude-code-parent-agent-id"
# Callers may label their own traffic (per feature, per end user) on top of their key's labels.
FEATURE_HEADER = "x-clawback-feature"
USER_HEADER = "x-clawback-user"


class Authenticator:
    def __init__(self, settings: GatewaySettings, keys: KeyStore | None, upstream_key: str | None) -> None:
        self.settings = settings
        self.keys = keys
        self.upstream_auth = {"x-api-key": upstream_key} if upstream_key else {}

    def authenticate(self, headers: Sequence[tuple[str, str]]) -> tuple[Tenant, dict[str, str]]:
        """The tenant and the upstream credentials for a request; raises ``AuthenticationError``."""
        found = {k.lower(): v for k, v in headers}
        secret, header = found.get("x-api-key"), "x-api-key"
        if not secret:
            bearer = found.get("authorization", "")
            if bearer.lower().startswith("bearer "):
                secret, header = bearer[7:].strip(), "authorization"
        tenant = Tenant(
            session_id=found.get(SESSION_HEADER),
            agent_id=found.get(AGENT_HEADER),
            feature=found.get(FEATURE_HEADER),
            user=found.get(USER_HEADER),
        )
        if PARENT_AGENT_HEADER in found:
            tenant.labels["parent_agent_id"] = found[PARENT_AGENT_HEADER]
        if secret and secret.startswith(KEY_PREFIX) and self.keys is not None:
            try:
                key = self.keys.lookup(secret)
            except KeysUnavailable as exc:  # a 529 the SDKs retry, with the reason, rather than a 500
                raise OverloadedError(f"clawback gateway: {exc}; retry shortly") from None
            if key is None:
                raise AuthenticationError("invalid x-api-key: this clawback key is unknown or has been revoked")
            tenant.key_id = key.id
            labels = dict(key.labels)
            tenant.user = labels.pop("user", None) or tenant.user
            tenant.team = labels.pop("team", None)
            tenant.feature = labels.pop("feature", None) or tenant.feature
            tenant.labels.update(labels)
            return tenant, self.upstream_auth
        if secret and self.settings.passthrough_client_keys:
            tenant.key_id = "anthropic:" + hashlib.sha256(secret.encode()).hexdigest()[:12]
            value = secret if header == "x-api-key" else f"Bearer {secret}"
            return tenant, {header: value}
        if not self.settings.require_key:
            return tenant, self.upstream_auth
        if secret:
            raise AuthenticationError("invalid x-api-key: expected a clawback key (create one: clawback keys create)")
        raise AuthenticationError("x-api-key header is required: send a clawback key (clawback keys create)")
