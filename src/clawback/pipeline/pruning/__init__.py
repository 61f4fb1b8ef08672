"""Conversation context pruning (issue 6): fewer input tokens, the facts kept, the prompt cache respected.

``pruner`` is the pure function (history -> pruned history), ``stage`` the pipeline stage around it,
``facts`` / ``relevance`` the strategies' scoring, ``summary`` the optional cheap-model summarizer, ``evaluate``
the ``clawback eval pruning`` report.
"""

from clawback.pipeline.pruning.pruner import CacheRates, Plan, plan_pruning, render
from clawback.pipeline.pruning.stage import PruneOutcome, PruningStage, policy_for

__all__ = ["CacheRates", "Plan", "PruneOutcome", "PruningStage", "plan_pruning", "policy_for", "render"]
