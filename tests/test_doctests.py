"""The worked examples in the package's docstrings hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dynamic_tinybert

# __main__ runs the command line when imported
MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(dynamic_tinybert.__path__, "dynamic_tinybert.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
