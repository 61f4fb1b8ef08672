"""``clawback eval semantic``: the semantic cache scored on labelled question pairs, through the stage itself.

Without ``--pairs`` it scores the shipped corpus's test split (the calibration never saw it) with the
configured settings (``semantic_cache.*``; the shipped calibrated threshold unless ``threshold`` is set), then
shows the guards' effect per false-hit class. ``--pairs FILE`` scores any JSONL file of ``{"a", "b", "same",
"kind"}`` lines the same way. ``--calibrate`` chooses the threshold (and the word alignment's word similarity) on
the tuning files (``evaluate.TUNING_SPLITS``: the calibration split and the nine holdouts, never the test split) and
writes them to the package's ``calibrated.json``. With ``--json`` the last line printed is one JSON object.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from clawback.cli.bench import wide_console
from clawback.cli.eval import eval_app
from clawback.cli.options import ConfigOption, err_console, settings_or_exit

__all__ = ["eval_semantic"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@eval_app.command("semantic")
def eval_semantic(
    pairs: Annotated[
        Path | None, typer.Option(help="JSONL of {a, b, same, kind} (default: the corpus test split)")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="End with one JSON object (figures, per kind)")] = False,
    split: Annotated[
        str,
        typer.Option(help="Corpus file without --pairs: test, calibration, holdout, holdout2-9, tuning or all"),
    ] = "test",
    ablation: Annotated[bool, typer.Option(help="Also score each guard alone and no guard (per-class effect)")] = True,
    calibrate: Annotated[bool, typer.Option(help="Choose the threshold on the tuning files; write it")] = False,
    target: Annotated[float, typer.Option(help="--calibrate: precision to hold", min=0.5, max=1.0)] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Precision, recall and false-hit rate of the semantic cache at the configured settings, overall and per kind."""
    from clawback.embeddings import shared_embedder
    from clawback.pipeline.semantic_cache.alignment import Aligner
    from clawback.pipeline.semantic_cache.calibration import choose_threshold, write_calibration
    from clawback.pipeline.semantic_cache.evaluate import (
        CORPUS_SPLITS,
        TUNING_SPLITS,
        MemoEmbedder,
        PairFileError,
        corpus_path,
        guard_ablation,
        load_pairs,
        report,
        score_pairs,
        similarities,
    )
    from clawback.pipeline.semantic_cache.verify import verdict
    from clawback.pricing import load_price_book

    settings = settings_or_exit(config)
    semantic = settings.semantic_cache
    try:
        if calibrate:
            sources = [str(corpus_path(s)) for s in TUNING_SPLITS]
        elif pairs is not None:
            sources = [str(pairs)]
        elif split in ("all", "tuning"):
            sources = [str(corpus_path(s)) for s in (CORPUS_SPLITS if split == "all" else TUNING_SPLITS)]
        elif split in CORPUS_SPLITS:
            sources = [str(corpus_path(split))]
        else:
            names = ", ".join((*CORPUS_SPLITS, "tuning", "all"))
            err_console.print(f"[bold red]clawback:[/] --split must be one of {names} (got {split!r})")
            raise typer.Exit(2)
        loaded = [p for source in sources for p in load_pairs(source)]
    except PairFileError as exc:
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    embedder = MemoEmbedder(shared_embedder(semantic.model, semantic.embed_threads))
    price_book = load_price_book(settings.pricing)
    started = time.perf_counter()
    embedder.prefetch([t for p in loaded for t in (p.a, p.b)])
    embed_s = time.perf_counter() - started

    if calibrate:
        sims = similarities(loaded, embedder)
        # lower is more lenient (more words count as counterparts); 1.0 is the alignment check at its strictest
        options = [semantic.word_similarity] if semantic.word_similarity else [0.2, 0.3, 0.4, 0.5, 0.6]
        tried: dict[str, Any] = {}
        best: tuple[float, Any] | None = None
        for word_similarity in options:
            aligner = Aligner(embedder, word_similarity)
            scored = [(s, verdict(p.a, p.b, semantic.guards, aligner) is None, p.same)
                      for p, s in zip(loaded, sims, strict=True)]  # fmt: skip
            chosen = choose_threshold(scored, target=target)
            tried[str(word_similarity)] = {"threshold": round(chosen.threshold, 4), "recall": round(chosen.recall, 4),
                                           "served": chosen.served, "wrong": chosen.wrong}  # fmt: skip
            if best is None or chosen.served - chosen.wrong > best[1].served - best[1].wrong:
                best = (word_similarity, chosen)
        assert best is not None
        data = write_calibration(best[1], model=semantic.model, pairs=len(loaded), target=target,
                                 guards=semantic.guards.model_dump(), word_similarity=best[0], tried=tried,
                                 files=[Path(s).name for s in sources])  # fmt: skip
        print(orjson.dumps(data).decode())
        return

    outcomes = score_pairs(loaded, semantic, embedder, price_book)
    result: dict[str, Any] = {"source": sources, "model": semantic.model, **report(outcomes)}
    from clawback.pipeline.semantic_cache.calibration import shipped_threshold

    threshold = semantic.threshold if semantic.threshold is not None else shipped_threshold()
    result["threshold"] = threshold
    result["embed_seconds"] = round(embed_s, 2)
    if ablation:
        result["guards"] = guard_ablation(loaded, semantic, embedder, price_book, threshold)
    if json_output:
        print(orjson.dumps(result).decode())
        return
    console = wide_console()
    table = Table(title=f"semantic cache on {', '.join(Path(s).name for s in sources)} (threshold {threshold:.3f})")
    for column in ("kind", "pairs", "served hits", "wrong hits", "precision", "recall", "false-hit rate"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    rows = [("all", result), *result["per_kind"].items()]
    for kind, row in rows:
        table.add_row(kind, str(row["pairs"]), str(row["served_hits"]), str(row["wrong_hits"]), _pct(row["precision"]),
                      _pct(row["recall"]), _pct(row["false_hit_rate"]), end_section=kind == "all")  # fmt: skip
    console.print(table)
    if ablation:
        kinds = sorted(result["per_kind"])
        guards = Table(title="wrong hits per class: threshold only, each guard alone, all guards")
        for column in ("guards", "served", "wrong", "precision", "recall", "paraphrases lost", *kinds):
            guards.add_column(column, justify="left" if column == "guards" else "right")
        for label, row in result["guards"].items():
            guards.add_row(label, str(row["served_hits"]), str(row["wrong_hits"]), _pct(row["precision"]),
                           _pct(row["recall"]), str(row.get("paraphrases_rejected", "")),
                           *(str(row["wrong_by_kind"].get(k, 0)) for k in kinds))  # fmt: skip
        console.print(guards)
