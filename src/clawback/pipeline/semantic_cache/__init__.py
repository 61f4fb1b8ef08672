"""The semantic response cache (issue 17): equivalent questions answered from stored replies, safe by construction.

Modules: ``partition`` (what must match exactly, and who is eligible), ``guards`` (token-level checks per known
false-hit class), ``edits`` (the near-copy check), ``alignment`` (the word alignment), ``verify`` (all checks in
order), ``calibration`` (the precision-first threshold, from the corpus's tuning files only),
``evaluate`` (``clawback eval semantic``: pairs scored through the stage itself), ``stage`` (the pipeline stage).
"""

from clawback.pipeline.semantic_cache.stage import Match, SemanticCacheStage

__all__ = ["Match", "SemanticCacheStage"]
