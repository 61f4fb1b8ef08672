"""The layering rules, checked over every module's imports (``ast``: nothing is imported to check them).

* A stage package (``pipeline/``) imports no front door (``gateway/``, ``sdk.py``, ``front/``), no command
  (``cli/``) and no offline tool (``bench/``): the request path must not depend on what is built on it.
* ``api/`` (the API's shapes and rules) imports nothing of clawback's but itself; ``pricing.py`` only ``api/``
  and ``config.py``: every figure traces back to them, so they sit at the bottom.
* One front door never imports the other: the gateway and the wrapper stand side by side on ``front/``.

Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src"


@dataclass(frozen=True)
class Rule:
    name: str
    importer: str  # a module or package, dotted
    forbidden: tuple[str, ...] = ()  # modules or packages it must not import
    only: tuple[str, ...] | None = None  # when set: the only clawback modules it may import


RULES = (
    Rule("a stage package imports no front door, command or offline tool", "clawback.pipeline",
         forbidden=("clawback.gateway", "clawback.sdk", "clawback.front", "clawback.cli", "clawback.bench")),
    Rule("api/ imports nothing above it", "clawback.api", only=("clawback.api",)),
    Rule("pricing.py imports nothing above it", "clawback.pricing", only=("clawback.api", "clawback.config")),
    Rule("the gateway does not import the wrapper", "clawback.gateway", forbidden=("clawback.sdk",)),
    Rule("the wrapper does not import the gateway", "clawback.sdk", forbidden=("clawback.gateway",)),
)  # fmt: skip


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every clawback module ``module`` imports (relative imports resolved; ``from package import name`` is the
    module ``package.name`` when there is one, else ``package``), with the line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import clawback.x.y`` names a module; a name in it: its module
                target = target.rpartition(".")[0]
            if target:
                yield target, node.lineno


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    found: set[str] = set()
    known = {name for name, _ in modules(root)}
    for module, path in modules(root):
        for rule in rules:
            if not _within(module, rule.importer):
                continue
            for target, line in imports(module, path, known):
                if rule.only is not None:
                    bad = not any(_within(target, allowed) for allowed in rule.only)
                else:
                    bad = any(_within(target, banned) for banned in rule.forbidden)
                if bad:
                    found.add(f"{path.relative_to(root)}:{line}: {module} imports {target} ({rule.name})")
    return sorted(found)


def test_the_source_tree_keeps_the_import_rules() -> None:
    found = violations(SRC)
    assert not found, "import rules broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("clawback/pipeline/newstage.py", "from clawback.gateway.app import Gateway\n", "clawback.gateway.app"),
        ("clawback/pipeline/newstage.py", "def f():\n    from ..bench import savings\n", "clawback.bench.savings"),
        ("clawback/pipeline/newstage.py", "from clawback import sdk\n", "clawback.sdk"),
        ("clawback/api/new.py", "from clawback.pipeline.context import Reply\n", "clawback.pipeline.context"),
        ("clawback/api/new.py", "import clawback.pricing\n", "clawback.pricing"),
        ("clawback/pricing.py", "from clawback.tokens import fast_tokens\n", "clawback.tokens"),
        ("clawback/sdk.py", "from clawback.gateway import process\n", "clawback.gateway.process"),
        ("clawback/gateway/new.py", "from .. import sdk\n", "clawback.sdk"),
    ],
)
def test_each_rule_catches_a_violation(tmp_path: Path, where: str, source: str, expected: str) -> None:
    """The checker is not vacuous: a copy of the tree with one violating module fails it."""
    tree = tmp_path / "src"
    for _, path in modules(SRC):
        target = tree / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    offender = tree / where
    offender.parent.mkdir(parents=True, exist_ok=True)
    offender.write_text((offender.read_text() if offender.exists() else "") + source)
    found = violations(tree)
    assert len(found) == 1 and f"imports {expected} (" in found[0], found
