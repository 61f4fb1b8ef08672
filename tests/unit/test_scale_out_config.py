"""The settings and files that scale-out rests on: the ``redis.url`` switch and journal slots per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clawback.config import load_settings
from clawback.storage.journal import claim_journal_slot


def test_redis_url_moves_every_redis_capable_store_unless_a_section_says_otherwise() -> None:
    plain = load_settings()
    assert plain.exact_cache.backend == "memory" and plain.pruning.summary_store == "memory"
    assert plain.budgets.backend == "memory"
    shared = load_settings(redis={"url": "redis://10.1.2.3:6380/2"})
    assert (shared.exact_cache.backend, shared.exact_cache.redis_url) == ("redis", "redis://10.1.2.3:6380/2")
    assert (shared.pruning.summary_store, shared.pruning.summary_redis_url) == ("redis", "redis://10.1.2.3:6380/2")
    assert (shared.budgets.backend, shared.budgets.redis_url) == ("redis", "redis://10.1.2.3:6380/2")
    assert plain.flags.redis_url is None and shared.flags.redis_url == "redis://10.1.2.3:6380/2"
    own = load_settings(redis={"url": "redis://10.1.2.3:6380/2", "keep_local": ["exact_cache"]},
                        budgets={"redis_url": "redis://other:6379/0"})  # fmt: skip
    assert own.exact_cache.backend == "memory"
    kept = load_settings(redis={"url": "redis://h:6379/0", "keep_local": ["flags"]})
    assert kept.flags.redis_url is None  # flags reload from the database on their own refresh_s
    assert (own.budgets.backend, own.budgets.redis_url) == ("redis", "redis://other:6379/0")


def test_keep_local_names_real_sections() -> None:
    import pytest

    from clawback.config import ConfigError

    with pytest.raises(ConfigError, match=r"redis.keep_local: no such section\(s\) \['exact_cach'\]"):
        load_settings(redis={"url": "redis://h:6379/0", "keep_local": ["exact_cach"]})


def test_each_live_process_gets_its_own_journal_slot_and_a_dead_ones_slot_is_reused(tmp_path: Path) -> None:
    base = tmp_path / "ledger.journal"
    hold = (
        "import sys, time; from clawback.storage.journal import claim_journal_slot as c; "
        "print(c(sys.argv[1]), flush=True); time.sleep(60)"
    )
    first = subprocess.Popen([sys.executable, "-c", hold, str(base)], stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-c", hold, str(base)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and second.stdout is not None
        taken = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert taken == {str(base), str(base) + ".1"}
        assert claim_journal_slot(base) == base.with_name("ledger.journal.2")  # this process: the next free one
        first.kill()
        first.wait()
        freed = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(60)", "pass"), str(base)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        # The dead process's slot (and so its journal, to replay) goes to the next process that starts.
        assert freed.stdout.strip() in taken
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
