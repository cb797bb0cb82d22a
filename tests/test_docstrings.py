"""Every example in the public docstrings runs and prints what it says."""

import doctest

import pytest

import mlx_embag
from mlx_embag import backend, functional, layers, reference

MODULES = [mlx_embag, backend, functional, layers, reference]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no docstring example"
    assert result.failed == 0
