"""The worked examples in the package's docstrings hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dynamic_tinybert


def _has_examples(name: str) -> bool:
    finder = doctest.DocTestFinder()
    tests = finder.find(importlib.import_module(name))
    return any(not example.options.get(doctest.SKIP) for test in tests for example in test.examples)


# __main__ runs the command line when imported; a module without examples (or only skipped ones,
# which need a model) has nothing to check
MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(dynamic_tinybert.__path__, "dynamic_tinybert.")
    if not m.name.endswith("__main__") and _has_examples(m.name)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_the_modules_with_worked_examples_are_found():
    expected = {"dynamic_tinybert.selector", "dynamic_tinybert.batching", "dynamic_tinybert.metrics"}
    assert expected <= set(MODULES)
