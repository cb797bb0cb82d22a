"""Fixtures over tests/support.py; test modules import plain helpers from there."""

import pytest
from support import emulated


@pytest.fixture(scope="module")
def metal(request):
    """The real Metal backend on a Mac, else the emulator, for a whole module.

    The module sets ``METAL_SEED`` (the emulator's threadgroup order) and may set
    ``METAL_SANITIZE``; it opts in with ``pytestmark = pytest.mark.usefixtures("metal")``.
    """
    with emulated(
        seed=getattr(request.module, "METAL_SEED", None),
        sanitize=getattr(request.module, "METAL_SANITIZE", False),
    ):
        yield
