"""The optimization pipeline: stages around the upstream call, in the order ``build.py`` declares."""

from clawback.pipeline.build import build_pipeline
from clawback.pipeline.context import Reply, RequestContext, Savings, Tenant, new_request_id
from clawback.pipeline.stage import CallNext, Pipeline, Stage

__all__ = [
    "CallNext",
    "Pipeline",
    "Reply",
    "RequestContext",
    "Savings",
    "Stage",
    "Tenant",
    "build_pipeline",
    "new_request_id",
]
