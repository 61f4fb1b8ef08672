"""Budget definitions, emergency overrides and their audit trail, in the ledger's database.

``BudgetSpec`` is what an admin writes (validated with messages that say what to fix); ``Budget`` is what the
budget stage reads: the definition plus its overrides, with ``limits(now)`` giving the limit in force at an
instant, so an override stops applying the moment it expires whether or not anything re-read the table.
Every change (create, set, delete, override, revoke) writes a row to ``budget_audit``: who, when, why, and
what changed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine, Table, delete, insert, select, update

from clawback.config import TimeZoneName
from clawback.pricing import from_micro_usd, to_micro_usd
from clawback.storage.budget_models import BudgetAlertRow, BudgetAuditRow, BudgetOverrideRow, BudgetRow
from clawback.storage.engine import make_engine

__all__ = [
    "SCOPES",
    "AuditEntry",
    "Budget",
    "BudgetOverride",
    "BudgetPatch",
    "BudgetSpec",
    "BudgetStore",
    "OverrideSpec",
    "Scope",
]

Scope = Literal["key", "team", "user", "feature", "conversation", "org"]
SCOPES: tuple[str, ...] = ("key", "team", "user", "feature", "conversation", "org")
WindowKind = Literal["day", "week", "month", "rolling"]
#: Longest an emergency override may last: overrides are for emergencies, a lasting change is a `set`.
MAX_OVERRIDE_S = 31 * 86400

_budgets = cast(Table, BudgetRow.__table__)
_overrides = cast(Table, BudgetOverrideRow.__table__)
_audit = cast(Table, BudgetAuditRow.__table__)
_alerts = cast(Table, BudgetAlertRow.__table__)


def _thresholds(values: list[int]) -> list[int]:
    return sorted(set(values))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetSpec(_Model):
    """A budget as an admin defines it. ``scope_value`` ``*`` gives every key / team / ... its own counter."""

    name: str = Field(min_length=1, max_length=200)
    scope: Scope
    scope_value: str | None = Field(None, max_length=200, description="Which key/team/...; '*' = each one")
    limit_usd: Decimal | None = Field(None, ge=0, description="Dollars per window")
    limit_tokens: int | None = Field(None, ge=0, description="Tokens (prompt, cached or not, + output) per window")
    window: WindowKind = "month"
    rolling_s: int | None = Field(None, ge=60, le=366 * 86400, description="Length of a rolling window")
    timezone: TimeZoneName | None = Field(None, description="Calendar windows; unset: budgets.timezone")
    thresholds: Annotated[list[Annotated[int, Field(ge=1, le=1000)]], AfterValidator(_thresholds)] = Field(
        default_factory=lambda: [50, 80, 100], description="Alert at these percentages of the limit"
    )
    forecast: bool = Field(True, description="Alert when the run rate will cross the limit before the window ends")
    action: Literal["refuse", "downgrade"] = "refuse"
    downgrade_model: str | None = Field(None, max_length=100, description="action=downgrade: a cheaper model")
    min_max_tokens: int | None = Field(None, ge=1, description="action=downgrade: lower max_tokens down to this")
    on_store_error: Literal["open", "closed"] = Field("closed", description="Counter store unreachable")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("give limit_usd and/or limit_tokens")
        if self.scope == "org" and self.scope_value is not None:
            raise ValueError("scope org covers every request: leave scope_value unset")
        if self.scope != "org" and not self.scope_value:
            raise ValueError(f"scope {self.scope} needs scope_value (an id or name, or * for each one)")
        if (self.window == "rolling") != (self.rolling_s is not None):
            raise ValueError("rolling_s is given with window=rolling, and only then")
        if self.action == "downgrade" and self.downgrade_model is None and self.min_max_tokens is None:
            raise ValueError("action=downgrade needs downgrade_model and/or min_max_tokens")
        return self


class BudgetPatch(_Model):
    """``clawback budgets set``: the fields given replace the budget's."""

    limit_usd: Decimal | None = Field(None, ge=0)
    limit_tokens: int | None = Field(None, ge=0)
    thresholds: list[Annotated[int, Field(ge=1, le=1000)]] | None = None
    forecast: bool | None = None
    action: Literal["refuse", "downgrade"] | None = None
    downgrade_model: str | None = None
    min_max_tokens: int | None = Field(None, ge=1)
    on_store_error: Literal["open", "closed"] | None = None
    clear: list[Literal["limit_usd", "limit_tokens", "downgrade_model", "min_max_tokens"]] = Field(
        default_factory=list, description="Fields to unset"
    )
    reason: str | None = None


class OverrideSpec(_Model):
    """An emergency override: a raised (or lifted) limit for a bounded time, with a reason."""

    limit_usd: Decimal | None = Field(None, ge=0)
    limit_tokens: int | None = Field(None, ge=0)
    lift: bool = Field(False, description="No limit at all while the override lasts")
    duration_s: float = Field(gt=0, le=MAX_OVERRIDE_S)
    reason: str = Field(min_length=3, max_length=2000, description="Why (kept in the audit trail)")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.lift and self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("give limit_usd and/or limit_tokens, or lift=true")
        return self


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    id: int
    budget_id: str
    limit_micro_usd: int | None
    limit_tokens: int | None
    lifted: bool
    reason: str
    actor: str
    created_at: datetime
    expires_at: datetime

    def active(self, now: datetime) -> bool:
        return self.created_at <= now < self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "limit_usd": _usd(self.limit_micro_usd), "limit_tokens": self.limit_tokens,
            "lifted": self.lifted, "reason": self.reason, "actor": self.actor,
            "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat(),
        }  # fmt: skip


def _usd(micro: int | None) -> str | None:
    return None if micro is None else str(from_micro_usd(micro))


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    name: str
    scope: str
    scope_value: str | None
    limit_micro_usd: int | None
    limit_tokens: int | None
    window: str
    rolling_s: int | None
    timezone: str | None
    thresholds: tuple[int, ...]
    forecast: bool
    action: str
    downgrade_model: str | None
    min_max_tokens: int | None
    on_store_error: str
    created_at: datetime
    updated_at: datetime
    overrides: tuple[BudgetOverride, ...] = field(default=())

    def limits(self, now: datetime) -> tuple[int | None, int | None, BudgetOverride | None]:
        """(micro-dollars, tokens, the override in force) at ``now``; None means no limit on that measure."""
        for override in sorted(self.overrides, key=lambda o: o.created_at, reverse=True):
            if override.active(now):
                if override.lifted:
                    return None, None, override
                micro = override.limit_micro_usd if override.limit_micro_usd is not None else self.limit_micro_usd
                tokens = override.limit_tokens if override.limit_tokens is not None else self.limit_tokens
                return micro, tokens, override
        return self.limit_micro_usd, self.limit_tokens, None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "scope": self.scope, "scope_value": self.scope_value,
            "limit_usd": _usd(self.limit_micro_usd), "limit_tokens": self.limit_tokens, "window": self.window,
            "rolling_s": self.rolling_s, "timezone": self.timezone, "thresholds": list(self.thresholds),
            "forecast": self.forecast, "action": self.action, "downgrade_model": self.downgrade_model,
            "min_max_tokens": self.min_max_tokens, "on_store_error": self.on_store_error,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
            "overrides": [o.to_json() for o in self.overrides],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    budget_id: str
    reason: str | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "action": self.action, "budget_id": self.budget_id,
                "reason": self.reason, "detail": self.detail}  # fmt: skip


def _micro(value: Decimal | None) -> int | None:
    return None if value is None else to_micro_usd(value)


def _budget(row: Any, overrides: tuple[BudgetOverride, ...]) -> Budget:
    return Budget(
        id=row.id, name=row.name, scope=row.scope, scope_value=row.scope_value, limit_micro_usd=row.limit_micro_usd,
        limit_tokens=row.limit_tokens, window=row.window, rolling_s=row.rolling_s, timezone=row.timezone,
        thresholds=tuple(int(t) for t in row.thresholds or ()), forecast=bool(row.forecast), action=row.action,
        downgrade_model=row.downgrade_model, min_max_tokens=row.min_max_tokens, on_store_error=row.on_store_error,
        created_at=_utc(row.created_at), updated_at=_utc(row.updated_at), overrides=overrides,
    )  # fmt: skip


def _utc(stamp: Any) -> datetime:
    value = datetime.fromisoformat(stamp) if isinstance(stamp, str) else cast(datetime, stamp)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _override(row: Any) -> BudgetOverride:
    return BudgetOverride(row.id, row.budget_id, row.limit_micro_usd, row.limit_tokens, bool(row.lifted), row.reason,
                          row.actor, _utc(row.created_at), _utc(row.expires_at))  # fmt: skip


class BudgetStore:
    """CRUD over the budget tables; every write is one transaction with its audit row."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        # Given an engine (the gateway process's one pool), the store borrows it and its owner disposes it.
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    # -- reads

    def budgets(self, now: datetime | None = None) -> list[Budget]:
        """Every budget with its overrides that have not expired (or all of them, ``now`` None)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_budgets).order_by(_budgets.c.created_at, _budgets.c.id)).all()
            stmt = select(_overrides).where(_overrides.c.revoked_at.is_(None))
            if now is not None:
                stmt = stmt.where(_overrides.c.expires_at > now)
            overrides: dict[str, list[BudgetOverride]] = {}
            for row in conn.execute(stmt.order_by(_overrides.c.id)):
                overrides.setdefault(row.budget_id, []).append(_override(row))
        return [_budget(r, tuple(overrides.get(r.id, ()))) for r in rows]

    def get(self, ref: str) -> Budget | None:
        """By id or by name."""
        return next((b for b in self.budgets() if ref in (b.id, b.name)), None)

    def audit(self, budget_id: str) -> list[AuditEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_audit).where(_audit.c.budget_id == budget_id).order_by(_audit.c.id)).all()
        return [AuditEntry(_utc(r.at), r.actor, r.action, r.budget_id, r.reason, dict(r.detail or {})) for r in rows]

    def alerts(self, budget_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(_alerts).where(_alerts.c.budget_id == budget_id).order_by(_alerts.c.id)).all()
        return [{"at": _utc(r.at).isoformat(), "kind": r.kind, "threshold": r.threshold, "scope_value": r.scope_value,
                 "window_start": _utc(r.window_start).isoformat(), "spent_usd": _usd(r.spent_micro_usd),
                 "spent_tokens": r.spent_tokens, "delivered": r.delivered} for r in rows]  # fmt: skip

    # -- writes

    def create(self, spec: BudgetSpec, actor: str) -> Budget:
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "id": "bud_" + secrets.token_hex(6), "name": spec.name, "scope": spec.scope,
            "scope_value": spec.scope_value, "limit_micro_usd": _micro(spec.limit_usd),
            "limit_tokens": spec.limit_tokens, "window": spec.window, "rolling_s": spec.rolling_s,
            "timezone": spec.timezone, "thresholds": list(spec.thresholds), "forecast": spec.forecast,
            "action": spec.action, "downgrade_model": spec.downgrade_model, "min_max_tokens": spec.min_max_tokens,
            "on_store_error": spec.on_store_error, "created_at": now, "updated_at": now,
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(insert(_budgets).values(**values))
            self._audit(conn, actor, "create", values["id"], None, spec.model_dump(mode="json"), now)
        budget = self.get(values["id"])
        assert budget is not None
        return budget

    def update(self, budget_id: str, patch: BudgetPatch, actor: str) -> Budget | None:
        changes: dict[str, Any] = {}
        for name in ("limit_tokens", "forecast", "action", "downgrade_model", "min_max_tokens", "on_store_error"):
            value = getattr(patch, name)
            if value is not None:
                changes[name] = value
        if patch.limit_usd is not None:
            changes["limit_micro_usd"] = _micro(patch.limit_usd)
        if patch.thresholds is not None:
            changes["thresholds"] = _thresholds(patch.thresholds)
        for name in patch.clear:
            changes["limit_micro_usd" if name == "limit_usd" else name] = None
        before = self.get(budget_id)
        if before is None:
            return None
        merged = {**before.to_json(), **{k: v for k, v in changes.items() if k != "limit_micro_usd"}}
        if "limit_micro_usd" in changes:
            merged["limit_usd"] = _usd(changes["limit_micro_usd"])
        spec_fields = set(BudgetSpec.model_fields)
        BudgetSpec.model_validate({k: v for k, v in merged.items() if k in spec_fields})  # still consistent?
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(update(_budgets).where(_budgets.c.id == before.id).values(**changes, updated_at=now))
            old = before.to_json()
            detail = {
                "before": {k: old.get("limit_usd" if k == "limit_micro_usd" else k) for k in changes},
                "after": patch.model_dump(mode="json", exclude_none=True, exclude={"reason"}),
            }
            self._audit(conn, actor, "set", before.id, patch.reason, detail, now)
        return self.get(before.id)

    def delete(self, budget_id: str, actor: str, reason: str | None = None) -> bool:
        budget = self.get(budget_id)
        if budget is None:
            return False
        with self.engine.begin() as conn:
            conn.execute(delete(_overrides).where(_overrides.c.budget_id == budget.id))
            conn.execute(delete(_budgets).where(_budgets.c.id == budget.id))
            self._audit(conn, actor, "delete", budget.id, reason, budget.to_json(), datetime.now(UTC))
        return True

    def override(self, budget_id: str, spec: OverrideSpec, actor: str) -> BudgetOverride | None:
        budget = self.get(budget_id)
        if budget is None:
            return None
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=spec.duration_s)
        values: dict[str, Any] = {
            "budget_id": budget.id, "limit_micro_usd": _micro(spec.limit_usd), "limit_tokens": spec.limit_tokens,
            "lifted": spec.lift, "reason": spec.reason, "actor": actor, "created_at": now, "expires_at": expires,
        }  # fmt: skip
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(_overrides).values(**values).returning(_overrides.c.id)).scalar_one()
            self._audit(conn, actor, "override", budget.id, spec.reason, spec.model_dump(mode="json") |
                        {"expires_at": expires.isoformat()}, now)  # fmt: skip
        return BudgetOverride(int(new_id), budget.id, values["limit_micro_usd"], spec.limit_tokens, spec.lift,
                              spec.reason, actor, now, expires)  # fmt: skip

    def record_alert(
        self,
        *,
        budget_id: str,
        scope_value: str | None,
        window_start: datetime,
        kind: str,
        threshold: int | None,
        spent_micro_usd: int,
        spent_tokens: int,
        delivered: bool,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(_alerts).values(
                at=datetime.now(UTC), budget_id=budget_id, scope_value=scope_value, window_start=window_start,
                kind=kind, threshold=threshold, spent_micro_usd=spent_micro_usd, spent_tokens=spent_tokens,
                delivered=delivered,
            ))  # fmt: skip

    @staticmethod
    def _audit(conn: Any, actor: str, action: str, budget_id: str, reason: str | None, detail: dict[str, Any],
               at: datetime) -> None:  # fmt: skip
        conn.execute(insert(_audit).values(at=at, actor=actor, action=action, budget_id=budget_id, reason=reason,
                                           detail=detail))  # fmt: skip
