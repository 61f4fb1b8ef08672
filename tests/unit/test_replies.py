from clawback.config import SimulatorSettings
from clawback.tokens import estimate_text_tokens
from clawback.upstream.simulator.replies import ReplyGenerator, load_script

MODEL = "claude-sonnet-4-6"


def body(text: str, max_tokens: int = 200, **extra):
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}], **extra}


def test_echo_mode_repeats_the_last_user_text():
    generator = ReplyGenerator(SimulatorSettings(reply_mode="echo", output_tokens=5))
    reply = generator.generate(body("three bedroom house"), 1)
    assert reply.content[0]["text"].startswith("three bedroom house")


def test_script_mode_matches_rules_in_order(tmp_path):
    script = tmp_path / "script.yaml"
    script.write_text("- match: 'pre-?approv'\n  reply: Are you pre-approved?\n- match: '.*'\n  reply: Tell me more.\n")
    generator = ReplyGenerator(SimulatorSettings(reply_mode="script", output_tokens=20), load_script(script))
    assert generator.generate(body("I am preapproved"), 1).content[0]["text"].startswith("Are you pre-approved?")
    assert generator.generate(body("hello"), 2).content[0]["text"].startswith("Tell me more.")


def test_output_length_is_the_setting_capped_by_max_tokens():
    generator = ReplyGenerator(SimulatorSettings(output_tokens=80))
    long = generator.generate(body("hi", max_tokens=500), 1)
    assert abs(long.output_tokens - 80) <= 2 and long.stop_reason == "end_turn"
    assert long.output_tokens == estimate_text_tokens(long.content[0]["text"], MODEL)
    capped = generator.generate(body("hi", max_tokens=10), 1)
    assert capped.output_tokens <= 10 and capped.stop_reason == "max_tokens"


def test_same_seed_same_reply_different_seed_different_filler():
    a = ReplyGenerator(SimulatorSettings(seed=1, output_tokens=60)).generate(body("x"), 3)
    b = ReplyGenerator(SimulatorSettings(seed=1, output_tokens=60)).generate(body("x"), 3)
    c = ReplyGenerator(SimulatorSettings(seed=2, output_tokens=60)).generate(body("x"), 3)
    assert a.content == b.content
    assert a.content != c.content


def test_tool_choice_none_never_calls_a_tool():
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    reply = ReplyGenerator(SimulatorSettings()).generate(body("x", tools=tools, tool_choice={"type": "none"}), 1)
    assert [b["type"] for b in reply.content] == ["text"]


def test_a_script_rule_calls_its_tool_then_answers_with_the_result(tmp_path):
    script = tmp_path / "script.yaml"
    script.write_text(
        "- match: 'run the check'\n  tool: Bash\n  input: {command: echo ok}\n  reply: 'It printed {tool_result}.'\n"
        "- match: 'hello'\n  reply: Hi there.\n"
    )
    generator = ReplyGenerator(SimulatorSettings(reply_mode="script", output_tokens=8), load_script(script))
    tools = [{"name": "Read", "input_schema": {}}, {"name": "Bash", "input_schema": {}}]
    first = generator.generate(body("Please run the check", tools=tools), 1)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert (call["name"], call["input"]) == ("Bash", {"command": "echo ok"})
    history = [
        {"role": "user", "content": "Please run the check"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "ok\n"}]},
    ]
    second = generator.generate({**body("x", tools=tools), "messages": history}, 2)
    assert second.stop_reason == "end_turn" and second.content[-1]["text"].startswith("It printed ok.")
    # a rule without a tool answers in text even when tools are offered; without the named tool, text too
    assert generator.generate(body("hello", tools=tools), 3).content[-1]["text"].startswith("Hi there.")
    no_bash = generator.generate(body("run the check", tools=tools[:1]), 4)
    assert no_bash.content[-1]["type"] == "text"
