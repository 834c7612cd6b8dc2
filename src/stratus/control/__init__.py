"""Control plane: the reconciler and the pure autoscaling policies."""
