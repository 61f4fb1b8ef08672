"""``pruning_bench.py``'s conversations pruned by two versions of the code in one process, run by run in turn.

Usage: ``.venv/bin/python benchmarks/pruning_ab.py --old REV [--runs 300] [--repeats 3]``. ``REV`` (a commit,
a branch) is exported with ``git archive`` into a temporary directory as the package ``clawback_old`` (its
``clawback.`` imports renamed), and the working tree's ``clawback`` is "new". Each run prunes the same body
once with the old stage and once with the new one (which goes first alternates), both cold (their own memos
cleared) or both warm, so that both see the same load: on a shared machine the other engineers' jobs move
absolute figures by a factor of two from one minute to the next, and runs of two checkouts minutes apart
compare the minutes more than the code. Figures are the thread's CPU time; each repeat prints its own.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pruning_bench

from clawback.config import PruningSettings

_RENAMES = (  # imports, the package's own data files, module paths in strings
    (re.compile(r"(?m)^(\s*(?:from|import)\s+)clawback\b"), r"\1clawback_old"),
    (re.compile(r"files\(\"clawback\"\)"), 'files("clawback_old")'),
    (re.compile(r"([\"'])clawback\."), r"\1clawback_old."),
)


def export_old(rev: str, root: Path) -> None:
    """``src/clawback`` of ``rev`` as the package ``clawback_old`` under ``root``."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", rev, "src/clawback"], cwd=repo, check=True, capture_output=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    package = root / "clawback_old"
    (root / "src" / "clawback").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        for pattern, replacement in _RENAMES:
            text = pattern.sub(replacement, text)
        path.write_text(text)


class Version:
    """One version's stage (above the planner, as the gateway runs it) and the memos cold runs clear."""

    def __init__(self, package: str) -> None:
        def module(name: str) -> ModuleType:
            return importlib.import_module(f"{package}.{name}")

        self.package = package
        book = module("pricing").PriceBook.bundled()
        self.policy = module("config").PruningSettings(enabled=True)
        stage = module("pipeline.pruning.stage").PruningStage(self.policy, book)
        self.stage = module("bench.pruning_eval").above_planner(stage, book)
        # every memo of the pruning modules (each version has its own set)
        pruning = [module(f"pipeline.pruning.{name}") for name in ("conversation", "facts", "pruner", "relevance")]
        self.memos = list({id(f): f for m in pruning for f in vars(m).values() if hasattr(f, "cache_clear")}.values())

    def run(self, body: dict[str, Any], cold: bool) -> float:
        if cold:
            for memo in self.memos:
                memo.cache_clear()
        start = time.thread_time()
        outcome = self.stage.prune_body(body, self.policy)
        elapsed = (time.thread_time() - start) * 1000
        assert outcome.plan is not None
        return elapsed


def _p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the commit or branch to compare the working tree with")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    PruningSettings(enabled=True)  # (the new package imported first: the old one is a copy beside it)
    with tempfile.TemporaryDirectory() as tmp:
        export_old(args.old, Path(tmp))
        sys.path.insert(0, tmp)
        old, new = Version("clawback_old"), Version("clawback")
        bodies = (
            ("lead chat, 100 turns", pruning_bench.lead_chat_100()),
            ("tool-using chat, 100 turns", pruning_bench.tool_chat_100()),
            ("agent loop, 100 round trips", pruning_bench.agent_loop_100()),
        )
        for repeat in range(args.repeats):
            for name, body in bodies:
                for regime in ("warm", "cold"):
                    cold = regime == "cold"
                    old.run(body, False)  # warm-up (imports, the first compaction)
                    new.run(body, False)
                    times: dict[str, list[float]] = {"old": [], "new": []}
                    gc.collect()
                    for i in range(args.runs):
                        pair = ((old, "old"), (new, "new")) if i % 2 == 0 else ((new, "new"), (old, "old"))
                        for version, label in pair:
                            times[label].append(version.run(body, cold))
                    o, n = times["old"], times["new"]
                    print(
                        f"[{repeat + 1}] {name:29s} {regime}: CPU p50 old {statistics.median(o):.2f} new "
                        f"{statistics.median(n):.2f} ms, p99 old {_p99(o):.2f} new {_p99(n):.2f} ms",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
