"""The gRPC interface (``grpc_inference.proto``) and its generated, checked-in modules."""
