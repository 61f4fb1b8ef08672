"""The budget counter stores: the same rules in process and in real Redis (127.0.0.1:6379, a key prefix of
each test's own): all-or-nothing reservations, exceeded vs blocked, leases that expire, renewals, idempotent
settles, and no overshoot when many clients race for one budget."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from clawback.storage.budget_counters import (
    CounterItem,
    CounterStore,
    CounterStoreUnavailable,
    EmbeddedCounters,
    RedisCounters,
)
from tests.conftest import redis_up


class Stores:
    """Makes counter stores inside one event loop; with Redis each is a new client on the same keys (a replica)."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.shared = EmbeddedCounters()
        self.made: list[CounterStore] = []

    def __call__(self) -> CounterStore:
        store: CounterStore = self.shared
        if self.kind == "redis":
            store = RedisCounters("redis://127.0.0.1:6379/0", self.prefix, 2.0)
        self.made.append(store)
        return store

    def run(self, scenario: Callable[[Stores], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await scenario(self)
            finally:
                for store in self.made:
                    await store.aclose()
                self.made.clear()

        asyncio.run(main())


@pytest.fixture(params=["embedded", "redis"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "redis" and not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"cbtest:budget:{uuid.uuid4().hex[:8]}:"
    yield Stores(request.param, prefix)
    if request.param == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)


def item(cid: str, micro: int, limit: int | None, tokens: int = 0, limit_tokens: int | None = None) -> CounterItem:
    return CounterItem(cid, ("w1",), 3600, micro, tokens, limit, limit_tokens)


def test_reserve_is_all_or_nothing_across_budgets(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        store = make_store()
        assert (await store.reserve("r1", [item("a", 60, 100), item("b", 60, 1000)], 30)).status == "ok"
        # b has room, a does not (60 reserved + 60 > 100, but settled 0 + 60 fits): blocked, nothing reserved on b.
        outcome = await store.reserve("r2", [item("b", 60, 1000), item("a", 60, 100)], 30)
        assert (outcome.status, outcome.index) == ("blocked", 1)
        assert outcome.usage.reserved_micro_usd == 60
        assert (await store.usage("b", ("w1",))).reserved_micro_usd == 60
        # Settling r1 for 50: a has 50 settled; 50 + 60 > 100 is now exceeded (no waiting can help).
        after = await store.settle("r1", [item("a", 50, 100), item("b", 50, 1000)])
        assert [u.spent_micro_usd for u in after] == [50, 50] and after[0].reserved_micro_usd == 0
        assert (await store.reserve("r3", [item("a", 60, 100)], 30)).status == "exceeded"
        assert (await store.reserve("r4", [item("a", 50, 100)], 30)).status == "ok"  # exactly at the limit fits

    stores.run(scenario)


def test_token_limits_and_unlimited_measures(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        store = make_store()
        assert (await store.reserve("r1", [item("t", 10**9, None, tokens=900, limit_tokens=1000)], 30)).status == "ok"
        outcome = await store.reserve("r2", [item("t", 0, None, tokens=200, limit_tokens=1000)], 30)
        assert outcome.status == "blocked" and outcome.usage.reserved_tokens == 900

    stores.run(scenario)


def test_settle_counts_once(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        store = make_store()
        await store.reserve("r1", [item("s", 100, 1000)], 30)
        await store.settle("r1", [item("s", 70, None)])
        await store.settle("r1", [item("s", 70, None)])
        usage = await store.usage("s", ("w1",))
        assert (usage.spent_micro_usd, usage.reserved_micro_usd, usage.reservations) == (70, 0, 0)

    stores.run(scenario)


def test_leases_expire_and_renewals_keep_them(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        crashed, alive = make_store(), make_store()
        assert (await crashed.reserve("dead", [item("l", 500, 1000)], 1.0)).status == "ok"
        assert (await alive.reserve("live", [item("l", 400, 1000)], 1.0)).status == "ok"
        for _ in range(3):  # the live replica renews; the crashed one cannot
            await asyncio.sleep(0.45)
            await alive.renew([("l", "live")], 1.0)
        usage = await alive.usage("l", ("w1",))
        assert (usage.reserved_micro_usd, usage.reservations) == (400, 1)
        assert (await alive.reserve("next", [item("l", 600, 1000)], 1.0)).status == "ok"

    stores.run(scenario)


def test_many_clients_racing_never_overshoot(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        replicas = [make_store() for _ in range(4)]
        limit, each = 10_000, 700

        async def one(i: int) -> bool:
            store = replicas[i % len(replicas)]
            outcome = await store.reserve(f"r{i}", [item("race", each, limit)], 30)
            if outcome.status != "ok":
                return False
            await asyncio.sleep(0.001 * (i % 7))
            await store.settle(f"r{i}", [item("race", each, None)])
            return True

        results = await asyncio.gather(*(one(i) for i in range(200)))
        usage = await replicas[0].usage("race", ("w1",))
        assert usage.spent_micro_usd == each * sum(results) <= limit
        assert sum(results) == limit // each  # reservations that did not fit waited for none: exactly 14 got in
        assert usage.reserved_micro_usd == 0

    stores.run(scenario)


def test_claim_is_once_per_marker(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        a, b = make_store(), make_store()
        assert await a.claim("budget:w1:threshold:50", 60)
        assert not await b.claim("budget:w1:threshold:50", 60)
        assert await b.claim("budget:w1:threshold:80", 60)

    stores.run(scenario)


def test_unreachable_redis_is_reported_not_hung() -> None:
    async def scenario() -> None:
        store = RedisCounters("redis://127.0.0.1:1/0", "cbtest:none:", 0.2)
        with pytest.raises(CounterStoreUnavailable):
            await store.reserve("r", [item("x", 1, 10)], 30)
        with pytest.raises(CounterStoreUnavailable, match="circuit open"):  # the breaker answers at once
            await store.usage("x", ("w1",))
        await store.aclose()

    asyncio.run(scenario())


def test_a_retried_reserve_reserves_once(stores: Stores) -> None:
    async def scenario(make_store: Stores) -> None:
        store = make_store()
        assert (await store.reserve("r1", [item("i", 600, 1000)], 30)).status == "ok"
        assert (await store.reserve("r1", [item("i", 600, 1000)], 30)).status == "ok"
        usage = await store.usage("i", ("w1",))
        assert (usage.reserved_micro_usd, usage.reservations) == (600, 1)

    stores.run(scenario)
