"""The public API is what configsync/__init__.py exports, and nothing else."""

import subprocess
import sys

import configsync


def test_all_names_exist_and_are_public() -> None:
    for name in configsync.__all__:
        assert hasattr(configsync, name), name
    public = {n for n in dir(configsync) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(configsync, n)).__name__ == "module"}
    assert public - modules - {"TYPE_CHECKING", "Any"} == set(configsync.__all__) - {
        "__version__"}


def test_exported_classes_claim_the_package() -> None:
    for name in configsync.__all__:
        value = getattr(configsync, name)
        if isinstance(value, type):
            assert value.__module__.startswith("configsync."), name


def test_validating_does_not_import_the_client_side() -> None:
    code = ("import sys, configsync, configsync.cli; "
            "print('redis' in sys.modules, 'git' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
