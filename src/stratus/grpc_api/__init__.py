"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``), with the
standard health service and server reflection: a second front door to the gateway's data plane."""
