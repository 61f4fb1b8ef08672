"""``clawback eval pruning --json`` on a small slice of the reference workloads."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from clawback.cli import app


def test_eval_pruning_reports_every_strategy_as_json() -> None:
    result = CliRunner().invoke(app, ["eval", "pruning", "--json", "--workload", "lead_chat", "--scale", "0.5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["strategies"]) == {"window", "window+relevance", "window+facts", "tool_elision", "all"}
    every = report["strategies"]["all"]["all_requests"]
    assert every["fact_retention"] >= 0.98 and every["facts_needed"] > 0
    assert every["history_token_reduction"] > 0.1
    assert every["cost_usd"]["pruned+cache"] < every["cost_usd"]["cache"]
    assert report["turns"] == {"lead_chat": "human turns"}
    alone = report["strategies"]["all"]["workloads"]["lead_chat"]
    assert alone["all_requests"] == every  # one workload: its figures are the combined ones


def test_agentic_traffic_counts_round_trips_and_tool_loops_are_elided() -> None:
    result = CliRunner().invoke(app, ["eval", "pruning", "--json", "--workload", "agentic"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["turns"] == {"agentic": "round trips"}
    for strategy in ("tool_elision", "all"):
        figures = report["strategies"][strategy]["workloads"]["agentic"]
        for subset in ("all_requests", "long_conversations"):
            row = figures[subset]
            assert row["requests"] > 0 and row["facts_needed"] > 0  # sessions reach 20+ round trips
            assert row["history_token_reduction"] > 0.2, (strategy, subset, row)
            assert row["cost_usd"]["pruned+cache"] < row["cost_usd"]["cache"]
            assert row["fact_retention"] >= 0.99 and row["fact_retention_cached"] >= 0.99
            # with the planner's frontier a compaction is cheaper, so the cached set-up elides at least as much
            assert row["input_token_reduction_cached"] >= row["input_token_reduction"]
    long = report["strategies"]["all"]["workloads"]["agentic"]["long_conversations"]
    assert long["input_token_reduction_cached"] >= 0.5  # the bar, on the reference workload


# -- clawback eval pruning --conversations FILE ------------------------------------------------------------------

_FILLER = (
    " Sorry for the long message, I am typing this on my phone while the kids get ready for school and my"
    " thoughts wander a bit, but I wanted to give you the whole picture in one go so you can think it over."
)


def _chat(ident: str, turns: int) -> dict[str, object]:
    said = [
        "Hi, I'm Adaeze Okafor and we're looking for a house in Riverside." + _FILLER,
        "Our budget is $480,000 and we're pre-approved with Harbor Bank." + _FILLER,
        "We need at least 3 bedrooms and a fenced yard for our dog Biscuit." + _FILLER,
    ]
    said += [f"Another thought, number {i}, about the neighbourhood and the light in the kitchen." + _FILLER
             for i in range(len(said), turns - 1)]  # fmt: skip
    said.append("Actually, make the budget $505,000, my raise came through." + _FILLER)
    history = [{"user": text, "assistant": f"Noted, thank you (reply {i})."} for i, text in enumerate(said)]
    return {
        "id": ident, "system": "You are a helpful real-estate assistant.", "turns": history,
        "final_user": "Please sum up what you know about us before I call the agent.",
        "needed_facts": ["Okafor", "$505,000", "Harbor Bank", "Biscuit", "Riverside"],
        "stale_facts": ["$480,000"], "notes": "an unknown key: ignored",
    }  # fmt: skip


def _agent(ident: str, trips: int) -> dict[str, object]:
    tools = [{"name": "bash", "description": "Run a command.",
              "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]  # fmt: skip
    turns: list[dict[str, object]] = []
    user: object = "Fix the failing test in tests/test_parser.py; don't touch src/legacy/."
    for i in range(trips):
        use = {"type": "tool_use", "id": f"toolu_{i:03d}", "name": "bash", "input": {"command": f"pytest -k {i}"}}
        turns.append({"user": user, "assistant": [{"type": "text", "text": f"Run {i}."}, use]})
        output = "\n".join(f"tests/test_parser.py::test_case_{i}_{j} PASSED" for j in range(60))
        if i == 2:
            output += "\nFAILED tests/test_parser.py::test_unicode_names - AssertionError"
        user = [{"type": "tool_result", "tool_use_id": f"toolu_{i:03d}", "content": output}]
    return {
        "id": ident, "system": "You are a coding agent.", "tools": tools, "turns": turns, "final_user": user,
        "needed_facts": ["test_unicode_names", "src/legacy/"], "stale_facts": [],
    }  # fmt: skip


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_eval_conversations_reports_the_named_fields_on_the_last_line(tmp_path: Path) -> None:
    chat = _chat("chat-1", 24)
    chat["needed_facts"] = [*chat["needed_facts"], "sum up"]  # type: ignore[misc]  # in the final message
    path = _write(tmp_path / "mine.jsonl", [chat, "", _agent("agent-1", 22)])
    result = CliRunner().invoke(app, ["eval", "pruning", "--conversations", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    for name in ("conversations", "fact_retention", "history_reduction", "input_reduction",
                 "cost_reduction_vs_cache_alone", "stale_as_current", "prefix_stability"):  # fmt: skip
        assert name in report, name
    assert report["conversations"] == 2
    assert report["requests"] == 25 + 23  # every turn's request, and the final one
    assert report["facts_needed"] == 5 + 2  # "sum up" is in the final message: left out of the score
    assert report["label_problems"] == [
        {"conversation": "chat-1", "fact": "sum up", "reason": "in the system prompt or the final message"}
    ]
    assert report["stale_facts"] == 1
    assert set(report["per_conversation"]) == {"chat-1", "agent-1"}
    assert report["per_conversation"]["chat-1"]["turns"] == 25
    assert 0 < report["history_reduction"] < 1 and 0 < report["input_reduction"] < report["history_reduction"]
    assert report["cost_usd_pruned_and_cache"] > 0 and report["cost_usd_cache_alone"] > 0
    assert 0 < report["prefix_stability"] < 1  # compaction points break it, and only they do
    assert report["long"]["conversations"] == 2 and report["long"]["requests"] == (25 - 19) + (23 - 19)
    kept = report["fact_retention"] * report["facts_needed"]
    lost = sum(len(c["facts_lost"]) for c in report["per_conversation"].values())
    assert round(kept) + lost == report["facts_needed"]
    # the tables print the same conversations
    table = CliRunner().invoke(app, ["eval", "pruning", "--conversations", str(path)])
    assert table.exit_code == 0, table.output
    assert "chat-1" in table.output and "left out of the score" in table.output


def test_eval_conversations_rejects_a_bad_file_with_its_line(tmp_path: Path) -> None:
    runner = CliRunner()
    cases: list[tuple[list[object], str]] = [
        ([_chat("a", 3), "{not json"], "line 2: not JSON"),
        ([{k: v for k, v in _chat("a", 3).items() if k != "final_user"}], "line 1: final_user: Field required"),
        ([_chat("a", 3), _chat("a", 3)], "id 'a' occurs twice"),
        ([{**_agent("b", 3), "final_user": "no tool results"}], "not one the API accepts"),
        ([], "no conversations"),
    ]
    for lines, message in cases:
        path = _write(tmp_path / "bad.jsonl", lines)
        result = runner.invoke(app, ["eval", "pruning", "--conversations", str(path), "--json"])
        assert result.exit_code == 2, (message, result.output)
        assert message in " ".join(result.output.split()), (message, result.output)
    missing = runner.invoke(app, ["eval", "pruning", "--conversations", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "cannot read it" in " ".join(missing.output.split())
    model = runner.invoke(app, ["eval", "pruning", "--conversations", str(path), "--model", "claude-nonesuch"])
    assert model.exit_code == 2 and "unknown model" in " ".join(model.output.split())
