"""The model registry: versions, stages and references, and the formats a version can hold."""
