"""Gateway: the ASGI app, the data plane with its protocol adapters, and the control API's routes."""
