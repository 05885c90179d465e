"""The public API is what configsync/__init__.py exports, and nothing else."""

import configsync


def test_all_names_exist_and_are_public() -> None:
    for name in configsync.__all__:
        assert hasattr(configsync, name), name
    public = {n for n in dir(configsync) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(configsync, n)).__name__ == "module"}
    assert public - modules == set(configsync.__all__) - {"__version__"}


def test_exported_classes_claim_the_package() -> None:
    for name in configsync.__all__:
        value = getattr(configsync, name)
        if isinstance(value, type):
            assert value.__module__.startswith("configsync."), name
