"""Reference traffic of a real-estate lead assistant (Brightwater Realty, a made-up agency).

Four workloads, each seeded and reproducible, built from ``data/real_estate.yaml``:

- ``lead_chat``: lead-qualification conversations of 10-60 turns under a large system prompt (policies,
  market notes, a page of listings). The lead states facts over time; later turns depend on them and are
  labelled with the facts they need. Assistant turns are canned by the generator, so the baseline and the
  optimized replay send identical histories. Client caching: one breakpoint on the system prompt, what a
  reasonably careful application does (the history itself is left uncached, as most applications leave it).
- ``lead_scoring``: hundreds of independent scoring requests sharing one long instruction prefix, sent
  with no ``cache_control`` (a plain job loop).
- ``property_match``: questions against the listings page; the same criteria asked twice are the same
  question (labelled), whatever the wording. No client caching.
- ``faq``: website FAQ traffic: a few questions dominate, asked in the same words (exact repeats) or in
  other words (paraphrases, labelled as the same class), plus a long tail of one-off questions. No client
  caching.

Scoring, matching and FAQ requests pin ``temperature: 0``, as applications that want the same answer to
the same input do; conversations use the default sampling.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import yaml

from clawback.workloads.model import Step, StepLabels, Workload

__all__ = [
    "CHAT_MODEL",
    "FAQ_MODEL",
    "SCORING_MODEL",
    "faq",
    "lead_chat",
    "lead_scoring",
    "listings",
    "load_data",
    "property_match",
    "system_prompt",
]

CHAT_MODEL = "claude-sonnet-4-6"
SCORING_MODEL = "claude-haiku-4-5"
FAQ_MODEL = "claude-haiku-4-5"


@functools.cache
def load_data() -> dict[str, Any]:
    text = files("clawback.workloads").joinpath("data/real_estate.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def count(base: int, scale: float, minimum: int = 1) -> int:
    """``base`` items at scale 1.0; never fewer than ``minimum``."""
    return max(minimum, round(base * scale))


@functools.cache
def listings() -> tuple[dict[str, Any], ...]:
    """The agency's current page of listings: fixed (not seeded per workload), as a real agency has one."""
    data = load_data()
    parts = data["listing_parts"]
    rng = random.Random("brightwater-listings")
    result = []
    for i in range(48):
        area = data["areas"][i % len(data["areas"])]["name"]
        kind = rng.choice(parts["kinds"])
        beds = rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5]) if kind not in ("condo", "loft") else rng.choice([1, 2, 2, 3])
        price = 1000 * (rng.randrange(240, 980, 5) + 35 * beds)
        features = rng.sample(parts["features"], 3)
        pets = "no association limits"
        if kind in ("condo", "townhouse", "loft"):
            pets = rng.choice(["one cat or dog under 25 lb", "cats only", "no pets", "two pets, any size"])
        result.append(
            {
                "id": f"BW-{1001 + i * 7}",
                "address": f"{rng.randint(2, 480)} {rng.choice(parts['streets'])} {rng.choice(parts['street_kinds'])}",
                "area": area,
                "kind": kind,
                "price": price,
                "beds": beds,
                "baths": rng.choice([1, 1.5, 2, 2.5, 3]) if beds > 1 else 1,
                "sqft": 450 + beds * rng.randint(280, 520),
                "features": features,
                "pets": pets,
                "year": rng.randint(1915, 2024),
                "days": rng.randint(1, 90),
            }
        )
    return tuple(result)


def listing_line(item: dict[str, Any]) -> str:
    return (
        f"{item['id']} | {item['address']}, {item['area']} | {item['kind']}, built {item['year']} | "
        f"${item['price']:,} | {item['beds']} bd / {item['baths']} ba | {item['sqft']:,} sq ft | "
        f"{'; '.join(item['features'])} | Pets: {item['pets']} | on market {item['days']} days"
    )


def listings_page() -> str:
    return "CURRENT LISTINGS (id | address | type | price | beds/baths | size | highlights | pets | days)\n" + (
        "\n".join(listing_line(item) for item in listings())
    )


def market_notes() -> str:
    return "MARKET NOTES BY AREA\n" + "\n".join(f"- {a['name']}: {a['notes']}" for a in load_data()["areas"])


@functools.cache
def system_prompt() -> str:
    """The lead assistant's system prompt: identity, policies, market notes, a page of listings."""
    data = load_data()
    policies = "\n".join(f"{i}. {p}" for i, p in enumerate(data["policies"], 1))
    return "\n\n".join([data["agency"]["intro"], "AGENCY POLICIES\n" + policies, market_notes(), listings_page()])


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


# -- lead_chat ---------------------------------------------------------------------------------------------


def _conversation(
    rng: random.Random, data: dict[str, Any], lead: str, turns: int
) -> list[tuple[str, str, dict[str, str]]]:
    """(user text, canned assistant text, facts this turn needs) for each turn."""
    facts = data["facts"]
    keys = rng.sample(sorted(facts), k=rng.randint(4, len(facts)))
    keys = keys[: max(1, turns // 2 - 1)]
    values = {k: rng.choice(facts[k]["values"]) for k in keys}
    positions = sorted(rng.sample(range(1, max(2, turns // 2 + 1)), k=len(keys)))
    stated_at = dict(zip(positions, keys, strict=True))
    acknowledgements = data["assistant"]["acknowledge"]
    answers = data["assistant"]["answer"]
    stated: dict[str, str] = {}
    plan: list[tuple[str, str, dict[str, str]]] = []
    for turn in range(turns):
        needed: dict[str, str] = {}
        if turn == 0:
            user, reply = rng.choice(data["openers"]), rng.choice(answers)
        elif turn in stated_at:
            key = stated_at[turn]
            template = rng.choice(facts[key]["statements"])
            user, reply = template.format(value=values[key]), rng.choice(acknowledgements)
            stated[key] = values[key]
        else:
            eligible = [q for q in data["dependent_questions"] if any(k in stated for k in q["needs"])]
            if eligible and rng.random() < 0.6:
                question = rng.choice(eligible)
                user = question["text"]
                needed = {k: stated[k] for k in question["needs"] if k in stated}
            else:
                user = rng.choice(data["small_talk"])
            reply = rng.choice(answers)
        plan.append((f"{user}", reply, needed))
    return plan


def lead_chat(seed: int = 0, scale: float = 1.0) -> Workload:
    data = load_data()
    rng = random.Random(f"lead_chat:{seed}")
    system = [{"type": "text", "text": system_prompt(), "cache_control": {"type": "ephemeral"}}]
    steps: list[Step] = []
    conversations = count(12, scale)
    for c in range(conversations):
        lead = f"lead-{seed}-{c:03d}"
        turns = rng.randint(10, 60) if scale >= 1 else rng.randint(10, max(10, round(60 * scale)))
        plan = _conversation(rng, data, lead, turns)
        at = rng.uniform(0, 3600 * min(1.0, scale))
        history: list[dict[str, Any]] = []
        for turn, (user, reply, needed) in enumerate(plan):
            history.append(_user(user))
            request = {
                "model": CHAT_MODEL,
                "max_tokens": 1024,
                "system": system,
                "messages": list(history),
                "metadata": {"user_id": lead},
            }
            labels = StepLabels(session=lead, needed_facts=needed)
            steps.append(Step(ref=f"lead_chat/{lead}/t{turn:02d}", at_s=at, request=request, labels=labels))
            history.append(_assistant(reply))
            at += rng.uniform(360, 1500) if rng.random() < 0.08 else rng.uniform(15, 120)
    steps.sort(key=lambda s: (s.at_s, s.ref))
    return Workload(
        "lead_chat",
        "lead-qualification conversations of 10-60 turns under a large system prompt",
        steps,
        output_tokens=160,
        client_caching="one breakpoint on the system prompt (5 m)",
    )


# -- lead_scoring ------------------------------------------------------------------------------------------


def _lead_form(rng: random.Random, data: dict[str, Any]) -> str:
    scoring = data["scoring"]
    facts = data["facts"]
    name = f"{rng.choice(scoring['first_names'])} {rng.choice(scoring['last_names'])}"
    message = rng.choice(scoring["messages"]).format(street=rng.choice(data["listing_parts"]["streets"]) + " Lane")
    fields = {
        "name": name,
        "email": f"{name.split()[0].lower()}.{rng.randint(10, 999)}@example.com",
        "phone": f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}" if rng.random() > 0.1 else "n/a",
        "source": rng.choice(scoring["sources"]),
        "budget": rng.choice(facts["budget"]["values"] + ["not sure"]),
        "bedrooms": rng.choice(facts["bedrooms"]["values"]),
        "areas": rng.choice(facts["areas"]["values"]),
        "timeline": rng.choice(facts["move_date"]["values"] + ["just browsing"]),
        "financing": rng.choice(facts["pre_approval"]["values"] + ["not started"]),
    }
    lines = "\n".join(f"{k}: {v}" for k, v in fields.items())
    return f"LEAD FORM\n{lines}\nfirst message: {message}"


def scoring_prefix() -> str:
    """The long instruction prefix every scoring request repeats."""
    data = load_data()
    scoring = data["scoring"]
    rng = random.Random("scoring-examples")
    examples = []
    for i in range(scoring["example_count"]):
        score = rng.randint(5, 98)
        tier = "hot" if score >= 70 else "warm" if score >= 40 else "cold"
        examples.append(
            f"EXAMPLE {i + 1}\n{_lead_form(rng, data)}\nANSWER\n"
            f'{{"score": {score}, "tier": "{tier}", "reasons": ["financing", "timeline"], '
            f'"next_action": "{rng.choice(["call_today", "email_listings", "nurture_sequence"])}"}}'
        )
    rubric = "\n".join(f"- {r}" for r in scoring["rubric"])
    return "\n\n".join([scoring["instructions"], "RUBRIC\n" + rubric, *examples, market_notes(), listings_page()])


def lead_scoring(seed: int = 0, scale: float = 1.0) -> Workload:
    data = load_data()
    rng = random.Random(f"lead_scoring:{seed}")
    prefix = scoring_prefix()
    steps = []
    at = 0.0
    for i in range(count(300, scale)):
        request = {
            "model": SCORING_MODEL,
            "max_tokens": 300,
            "temperature": 0,
            "system": prefix,
            "messages": [_user(_lead_form(rng, data))],
        }
        ref = f"lead_scoring/{i:04d}"
        steps.append(Step(ref=ref, at_s=at, request=request, labels=StepLabels(session="scoring-job", same_as=ref)))
        at += rng.uniform(0.05, 0.4)
    return Workload(
        "lead_scoring",
        "batch lead scoring: independent requests sharing one long instruction prefix",
        steps,
        output_tokens=60,
    )


# -- property_match ----------------------------------------------------------------------------------------


def property_match(seed: int = 0, scale: float = 1.0) -> Workload:
    data = load_data()
    rng = random.Random(f"property_match:{seed}")
    matching = data["matching"]
    system = matching["instructions"] + "\n\n" + listings_page()
    areas = [a["name"] for a in data["areas"]]
    features = data["listing_parts"]["features"]
    steps = []
    at = 0.0
    for i in range(count(120, scale)):
        if rng.random() < 0.8:
            area, beds, price = rng.choice(areas[:5]), rng.choice([2, 3, 4]), rng.choice([450, 600, 750])
            text = rng.choice(matching["templates"]).format(area=area, beds=beds, price=price)
            same_as = f"match:{area}:{beds}:{price}"
        else:
            area, feature = rng.choice(areas), rng.choice(features)
            template = rng.choice(matching["feature_templates"])
            text = template.format(area=area, feature=feature)
            same_as = f"feature:{area if '{area}' in template else '*'}:{feature}"
        request = {
            "model": CHAT_MODEL, "max_tokens": 512, "temperature": 0, "system": system, "messages": [_user(text)],
        }  # fmt: skip
        ref = f"property_match/{i:04d}"
        steps.append(
            Step(ref=ref, at_s=at, request=request, labels=StepLabels(session=f"visitor-{i}", same_as=same_as))
        )
        at += rng.uniform(5, 60)
    return Workload("property_match", "property-matching questions against the listings page", steps, output_tokens=150)


# -- faq ---------------------------------------------------------------------------------------------------

_VARIANTS: list[Callable[[str], str]] = [
    lambda t: t.lower(),
    lambda t: t.rstrip("?"),
    lambda t: "Hi! " + t,
    lambda t: t + " Thanks.",
    lambda t: "Quick question: " + t[0].lower() + t[1:],
]


def faq(seed: int = 0, scale: float = 1.0) -> Workload:
    data = load_data()
    rng = random.Random(f"faq:{seed}")
    spec = data["faq"]
    system = spec["instructions"] + "\n\nKNOWLEDGE BASE\n" + "\n".join(f"- {k}" for k in spec["knowledge"])
    classes = list(spec["classes"].items())
    weights = [1 / (rank + 1) for rank in range(len(classes))]  # Zipf: a few questions dominate
    streets = data["listing_parts"]["streets"]
    steps = []
    seen: set[str] = set()
    repeats = paraphrases = tail = 0
    at = 0.0
    for i in range(count(300, scale)):
        if rng.random() < 0.15:
            text = f"Is the house on {rng.randint(2, 480)} {rng.choice(streets)} Lane still available?"
            same_as = f"tail:{text}"
            tail += 1
        else:
            name, phrasings = rng.choices(classes, weights)[0]
            text = rng.choices(phrasings, [0.6, 0.25, 0.15][: len(phrasings)])[0]
            if rng.random() < 0.35:  # people type the same question a little differently
                text = rng.choice(_VARIANTS)(text)
            same_as = f"faq:{name}"
            if text in seen:
                repeats += 1
            elif any(p in seen for p in phrasings):
                paraphrases += 1
        seen.add(text)
        request = {
            "model": FAQ_MODEL, "max_tokens": 300, "temperature": 0, "system": system, "messages": [_user(text)],
        }  # fmt: skip
        ref = f"faq/{i:04d}"
        steps.append(
            Step(ref=ref, at_s=at, request=request, labels=StepLabels(session=f"visitor-{i}", same_as=same_as))
        )
        at += rng.expovariate(1 / 20)
    total = len(steps)
    return Workload(
        "faq",
        "website FAQ traffic with exact repeats and paraphrases",
        steps,
        output_tokens=90,
        extras={
            "exact_repeat_rate": round(repeats / total, 3),
            "paraphrase_rate": round(paraphrases / total, 3),
            "one_off_rate": round(tail / total, 3),
        },
    )
