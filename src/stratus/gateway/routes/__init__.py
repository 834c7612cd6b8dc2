"""The control API's routers, one module per resource."""
