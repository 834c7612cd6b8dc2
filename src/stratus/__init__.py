"""Stratus: a serverless platform for AI models.

User code imports only this: ``@stratus.deployment``, ``@stratus.batch`` and the ``Context``
it receives; a job's ``train(ctx)`` receives a ``JobContext``.
"""

from stratus.sdk.batching import batch
from stratus.sdk.context import Context, RequestContext
from stratus.sdk.deployment import deployment
from stratus.sdk.jobs import JobContext
from stratus.sdk.options import DeploymentOptions, TensorSpec

__version__ = "0.1.0"

__all__ = ["Context", "DeploymentOptions", "JobContext", "RequestContext", "TensorSpec",
           "__version__", "batch", "deployment"]
