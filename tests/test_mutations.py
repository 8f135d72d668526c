"""The mutation check's bugs stay plantable: each one's source occurs exactly once in the tree (a refactor that
moves it must update benchmarks/mutations.py, or the check would plant nothing), and every registered method
has at least three (issue 42's bar), so adding a method without its mutations fails here."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

from selfsup.methods.base import METHODS

ROOT = Path(__file__).resolve().parents[1]


def load_mutations() -> list:
    spec = importlib.util.spec_from_file_location("mutations", ROOT / "benchmarks" / "mutations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MUTATIONS


MUTATIONS = load_mutations()


def test_every_method_has_three_mutations():
    counts = Counter(m.method for m in MUTATIONS)
    assert set(counts) <= set(METHODS.names()), f"mutations name unknown methods: {set(counts) - set(METHODS.names())}"
    assert {name: counts[name] for name in METHODS.names() if counts[name] < 3} == {}


# Ids by position: a method's name in an id would let `pytest -k NAME` select this test, which fails under
# every planted bug (its source is gone) and would count as catching it.
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[f"mutation-{i}" for i in range(len(MUTATIONS))])
def test_mutation_source_occurs_once(mutation):
    text = (ROOT / mutation.path).read_text()
    assert text.count(mutation.old) == 1, f"{mutation.path}: the source of {mutation.bug!r} is not there once"
    assert mutation.new != mutation.old
