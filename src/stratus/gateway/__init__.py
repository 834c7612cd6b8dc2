"""Gateway: the ASGI app and its protocol adapters (native, Open Inference Protocol v2)."""
