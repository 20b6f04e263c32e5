"""The property registry: each built-in property is defined once and has exactly one suite test."""

import importlib
import pkgutil
import subprocess
import sys
from collections import Counter

import irmechtest.suite
import pytest

from irmechtest.registry import PROPERTIES, Property, get_property, register_property


def suite_markers() -> list[pytest.Mark]:
    """Every ``irmech_property`` marker of the installed suite: on test functions and on parametrize cases."""
    marks = []
    for info in pkgutil.iter_modules(irmechtest.suite.__path__):
        module = importlib.import_module(f"irmechtest.suite.{info.name}")
        for name, obj in vars(module).items():
            if not (name.startswith("test_") and callable(obj)):
                continue
            for mark in getattr(obj, "pytestmark", []):
                if mark.name == "irmech_property":
                    marks.append(mark)
                if mark.name == "parametrize":
                    for case in mark.args[1]:
                        marks.extend(m for m in getattr(case, "marks", ()) if m.name == "irmech_property")
    return marks


def mismatches(registered: set[str], tested: list[str]) -> dict[str, list[str]]:
    """Registered properties without exactly one suite test, and suite properties that are not registered."""
    counts = Counter(tested)
    return {
        "without one suite test": sorted(n for n in registered if counts[n] != 1),
        "not registered": sorted(set(counts) - registered),
    }


def test_every_property_has_exactly_one_suite_test_and_vice_versa():
    found = mismatches(set(PROPERTIES), [m.args[0] for m in suite_markers()])
    assert found == {"without one suite test": [], "not registered": []}


def test_the_check_catches_a_missing_entry_a_missing_test_and_a_duplicate():
    found = mismatches({"a", "b", "c"}, ["a", "c", "c", "d"])
    assert found == {"without one suite test": ["b", "c"], "not registered": ["d"]}


def test_suite_markers_take_the_name_only():
    """Applicability, quantity and settings live in the registry, not restated on the marker."""
    assert [m for m in suite_markers() if m.kwargs or len(m.args) != 1] == []


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_each_entry_is_complete(name):
    prop = PROPERTIES[name]
    assert prop.quantity and "threshold" in prop.settings
    assert callable(prop.measure_function())
    assert set(prop.full_profile) <= set(prop.settings), "the full profile changes settings that exist"


def test_register_refuses_a_second_definition_and_get_names_the_known():
    with pytest.raises(ValueError, match="already registered"):
        register_property(Property("tfc1", "rate", "irmechtest.behaviour.compliance:measure_axiom"))
    with pytest.raises(KeyError, match="known: axiom-control"):
        get_property("no-such-property")


def test_reading_the_registry_and_the_configuration_imports_no_torch():
    code = "import sys, irmechtest.config, irmechtest.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Ranker:
    def __init__(self, kind: str, layout: str = "blocks") -> None:
        self.kind, self.layout = kind, layout


def test_applicability_is_read_from_the_entry():
    heads = get_property("scoring-heads")
    assert heads.not_applicable_reason(_Ranker("cross-encoder")) is None
    assert heads.not_applicable_reason(_Ranker("bi-encoder")).startswith("bi-encoder: bi-encoders encode")
    assert heads.not_applicable_reason(_Ranker("cross-encoder", "encoder-decoder")).startswith("encoder-decoder")
    assert get_property("tfc1").not_applicable_reason(_Ranker("cross-encoder", "encoder-decoder")) is None
