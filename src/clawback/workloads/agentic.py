"""An agentic trace shaped like a coding agent's traffic (Claude Code and the like).

Each session: a short identity block and a long instruction block in ``system``, ten tools with long
descriptions, a task, then one request per agent step whose history grows by a tool_use / tool_result pair
with a large tool output (a file read, a search, a test run). The client's own breakpoints are the ones such
a client places: on the instruction block and on the last content block of the newest user message (moved
forward every request). Gaps between steps are a few seconds (model + tool time), with an occasional
long pause (the user stepped away), so 5-minute cache entries sometimes expire. Now and then the agent reports
and the user gives a follow-up instruction (a new human turn in the same session), drawn from a list of
different instructions (with a random stream of its own, so the trace is otherwise the one it always was: one
repeated sentence would let a pruned request "keep" a later instruction through an earlier copy).

A turn, for this workload, is an API round trip (``turns_are_round_trips``: the Agent SDK's ``max_turns``
counts them): a session is 25-40 of them, mostly inside one or a few human turns.

Labels (``needed_facts``, for scoring only): what a coding agent still needs at each step to do the task
right, as exact strings of the history the request carries: the task (``task``) and every follow-up
instruction so far (``instruction_N``); the first failing test of the most recent test run, as the runner
printed it (``failing_test``: ``tests/test_x.py::test_y_3 FAILED``; gone once a later run passes), and the
path of the file it last edited (``edited_file``).
"""

from __future__ import annotations

import functools
import random
from importlib.resources import files
from typing import Any

import yaml

from clawback.workloads.model import Step, StepLabels, Workload
from clawback.workloads.real_estate import count

__all__ = ["AGENT_MODEL", "agentic", "load_data"]

AGENT_MODEL = "claude-sonnet-4-6"
EPHEMERAL = {"type": "ephemeral"}


@functools.cache
def load_data() -> dict[str, Any]:
    text = files("clawback.workloads").joinpath("data/agentic.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": tool["name"],
            "description": tool["description"],
            "input_schema": {
                "type": "object",
                "properties": {name: {"type": kind} for name, kind in tool["properties"].items()},
                "required": [next(iter(tool["properties"]))],
            },
        }
        for tool in data["tools"]
    ]


def _source_file(module: str, seed: int) -> list[str]:
    """A plausible Python module, deterministic per (module, seed)."""
    words = load_data()["code_words"]
    rng = random.Random(f"{module}:{seed}")
    lines = [
        f'"""{module.capitalize()}: helpers for the real-estate assistant."""',
        "",
        "from __future__ import annotations",
        "",
    ]
    for _ in range(rng.randint(6, 16)):
        verb, noun, other = rng.choice(words["verbs"]), rng.choice(words["nouns"]), rng.choice(words["nouns"])
        lines += [
            "",
            f"def {verb}_{noun}({noun}s: list[dict], *, {other}: str | None = None, "
            "limit: int | None = None) -> list[dict]:",
            f'    """{verb.capitalize()} the {noun}s for the {other} view; keeps the input order."""',
            "    result = []",
            f"    for item in {noun}s:",
            f"        if {other} is not None and item.get('{other}') != {other}:",
            "            continue",
            f"        if item.get('{noun}_id') in SEEN_{noun.upper()}S:",
            "            continue",
            f"        result.append({{**item, '{verb}ed': True, 'rank': len(result) + {rng.randint(1, 9)}}})",
            "    return result[:limit] if limit else result",
        ]
    return lines


def _tool_output(rng: random.Random, tool: str, seed: int) -> tuple[dict[str, Any], str]:
    modules = load_data()["code_words"]["modules"]
    module = rng.choice(modules)
    path = f"/repo/examples/real_estate/{module}.py"
    if tool == "Read":
        lines = _source_file(module, seed)
        return {"file_path": path}, "\n".join(f"{i:6d}\t{line}" for i, line in enumerate(lines, 1))
    if tool == "Grep":
        hits = []
        for _ in range(rng.randint(8, 30)):
            other = rng.choice(modules)
            hits.append(f"examples/real_estate/{other}.py:{rng.randint(1, 300)}:    return {module}_filter(items)")
        return {"pattern": f"{module}_filter", "output_mode": "content"}, "\n".join(hits)
    if tool == "Bash":
        tests = [
            f"tests/test_{rng.choice(modules)}.py::test_{rng.choice(modules)}_{i} "
            + ("PASSED" if rng.random() > 0.1 else "FAILED")
            for i in range(rng.randint(20, 60))
        ]
        failed = sum(t.endswith("FAILED") for t in tests)
        summary = f"==== {len(tests) - failed} passed, {failed} failed in {rng.uniform(0.5, 9):.2f}s ===="
        return {"command": "pytest -q tests", "description": "Run the tests"}, "\n".join([*tests, summary])
    if tool == "Edit":
        return {"file_path": path, "old_string": "limit: int | None = None", "new_string": "limit: int = 50"}, (
            f"The file {path} has been updated. Here's the result of running `cat -n` on a snippet:\n"
            + "\n".join(f"{i:6d}\t{line}" for i, line in enumerate(_source_file(module, seed)[:30], 1))
        )
    return {"pattern": "**/*.py"}, "\n".join(f"/repo/examples/real_estate/{m}.py" for m in modules)


def agentic(seed: int = 0, scale: float = 1.0) -> Workload:
    data = load_data()
    rng = random.Random(f"agentic:{seed}")
    system = [
        {"type": "text", "text": data["identity"]},
        {"type": "text", "text": "\n\n".join(data["instructions"]), "cache_control": EPHEMERAL},
    ]
    tools = _tools(data)
    tool_names = ["Read", "Read", "Read", "Grep", "Bash", "Edit", "Glob"]
    follow_ups: list[str] = data["follow_ups"]
    steps: list[Step] = []
    at = 0.0
    for s in range(count(3, scale)):
        session = f"agent-{seed}-{s}"
        task = rng.choice(data["tasks"])
        env = (
            f"<env>Working directory: /repo\nIs a git repo: yes\nPlatform: linux\nToday's date: 2026-11-{10 + s}</env>"
        )
        history: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "text", "text": env}, {"type": "text", "text": task}]}
        ]
        length = rng.randint(25, 40) if scale >= 1 else rng.randint(6, max(6, round(40 * scale)))
        needed: dict[str, str] = {"task": task}
        instructions = 0
        for i in range(length):
            request = {
                "model": AGENT_MODEL,
                "max_tokens": 32000,
                "system": system,
                "tools": tools,
                "messages": _with_last_breakpoint(history),
                "metadata": {"user_id": session},
            }
            ref = f"agentic/{session}/s{i:02d}"
            labels = StepLabels(session=session, needed_facts=dict(needed), same_as=ref)
            steps.append(Step(ref=ref, at_s=at, request=request, labels=labels))
            if rng.random() < 0.1:  # the agent reports; the user gives a follow-up instruction
                history.append(
                    {"role": "assistant", "content": [{"type": "text", "text": rng.choice(data["narration"])}]}
                )
                instruction = random.Random(f"agentic-follow-up:{seed}:{s}:{i}").choice(follow_ups)
                history.append({"role": "user", "content": [{"type": "text", "text": instruction}]})
                instructions += 1
                needed[f"instruction_{instructions}"] = instruction
            else:
                tool = rng.choice(tool_names)
                tool_input, output = _tool_output(rng, tool, seed * 1000 + s * 100 + i)
                if tool == "Bash":
                    failed = [line for line in output.splitlines() if line.endswith(" FAILED")]
                    if failed:
                        needed["failing_test"] = failed[0]
                    else:
                        needed.pop("failing_test", None)
                elif tool == "Edit":
                    needed["edited_file"] = str(tool_input["file_path"])
                use_id = f"toolu_{seed:02d}{s:02d}{i:03d}" + "x" * 14
                history.append(
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": rng.choice(data["narration"])},
                            {"type": "tool_use", "id": use_id, "name": tool, "input": tool_input},
                        ],
                    }
                )
                history.append(
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use_id, "content": output}]}
                )
            at += rng.uniform(400, 700) if rng.random() < 0.04 else rng.uniform(2, 25)
        at += rng.uniform(60, 600)
    return Workload(
        "agentic",
        "coding-agent trace: large system prompt and tool list, growing tool_use/tool_result history",
        steps,
        output_tokens=250,
        client_caching="breakpoints on the system prompt and on the newest user message (moved every request)",
        turns_are_round_trips=True,
    )


def _with_last_breakpoint(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as sent: copies, with ``cache_control`` on the last block of the last message only."""
    messages = [{"role": m["role"], "content": list(m["content"])} for m in history]
    last = messages[-1]["content"]
    last[-1] = {**last[-1], "cache_control": EPHEMERAL}
    return messages
