"""Control plane: the controller, the reconciler, the router and rollouts; policies are in ``autoscale``."""
