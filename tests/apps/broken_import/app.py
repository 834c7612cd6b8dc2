"""A module that fails at import time, as a missing dependency would."""

import definitely_not_an_installed_module  # noqa: F401


class Model:
    def __call__(self, request):
        return request
