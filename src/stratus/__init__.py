"""Stratus: a serverless platform for AI models.

User code imports only this: ``@stratus.deployment``, ``@stratus.batch`` and the ``Context``
it receives.
"""

from stratus.sdk.batching import batch
from stratus.sdk.context import Context, RequestContext
from stratus.sdk.deployment import deployment
from stratus.sdk.options import DeploymentOptions, TensorSpec

__version__ = "0.1.0"

__all__ = ["Context", "DeploymentOptions", "RequestContext", "TensorSpec", "__version__", "batch",
           "deployment"]
