"""The public API: every exported name resolves, lazily, so ``import irmechtest`` stays light."""

import subprocess
import sys

import irmechtest


def test_every_exported_name_resolves_to_its_defining_module():
    for name in irmechtest.__all__:
        value = getattr(irmechtest, name)
        assert getattr(value, "__name__", name) == name or name in dir(irmechtest)
    assert set(irmechtest.__all__) <= set(dir(irmechtest))


def test_import_does_not_load_torch_until_a_name_is_used():
    code = (
        "import sys, irmechtest; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "irmechtest.act_name; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_name_is_an_attribute_error():
    try:
        irmechtest.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:  # pragma: no cover
        raise AssertionError("irmechtest.no_such_name resolved")


def test_all_lists_exactly_the_exported_names():
    assert sorted(irmechtest.__all__) == sorted(irmechtest._EXPORTS)
