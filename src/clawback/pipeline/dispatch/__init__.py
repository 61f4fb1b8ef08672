"""Dispatch: the innermost stage, between the pipeline and the upstream (see ``stage``).

``limits`` (learned buckets, adaptive concurrency), ``retry`` (what to retry, how long to wait), ``breaker``
(one per upstream), ``fairness`` (weighted fair sharing between tenants), ``stage`` (the attempt loop).
"""

from clawback.pipeline.dispatch.stage import DispatchStage

__all__ = ["DispatchStage"]
