from __future__ import annotations

import pytest

from bench.registry import Registry, RegistryError, import_object


def test_decorator_and_direct_registration() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("square")
    def square(x: int) -> int:
        """Square a number."""
        return x * x

    reg.register("cube", lambda x: x**3, description="cube a number")
    assert reg.get("square")(3) == 9
    assert reg.get("cube")(2) == 8
    assert reg.names() == ["cube", "square"]
    assert reg.describe("square") == "Square a number."
    assert "square" in reg and len(reg) == 2


def test_duplicate_name_raises() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(RegistryError, match="duplicate widget name 'a'"):
        reg.register("a", 2)
    with pytest.raises(RegistryError, match="duplicate"):
        reg.register_lazy("a", "math:pi")


def test_unknown_name_suggests_close_matches() -> None:
    reg: Registry[int] = Registry("attack")
    for name in ("fgsm", "pgd", "bim"):
        reg.register(name, 0)
    with pytest.raises(RegistryError, match=r"unknown attack 'fgms'; did you mean 'fgsm'"):
        reg.get("fgms")
    with pytest.raises(RegistryError, match=r"known: bim, fgsm, pgd"):
        reg.get("zzzzzz")


def test_lazy_entry_is_imported_on_first_use() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register_lazy("pi", "math:pi")
    reg.register_lazy("join", "os.path:join", description="join paths")
    assert reg.get("pi") == pytest.approx(3.14159, rel=1e-5)
    assert reg.describe("join") == "join paths"


def test_plugin_strings_resolve_and_fail_clearly() -> None:
    reg: Registry[object] = Registry("attack", plugins=True)
    assert reg.get("collections:OrderedDict").__name__ == "OrderedDict"
    closed: Registry[object] = Registry("model")  # data sets and models take no plugins: nothing is imported
    with pytest.raises(RegistryError, match="unknown model 'collections:OrderedDict'"):
        closed.get("collections:OrderedDict")
    with pytest.raises(RegistryError, match="unknown model"):
        closed.check("collections:OrderedDict")
    with pytest.raises(RegistryError, match="cannot import module 'no_such_module_xyz'"):
        reg.get("no_such_module_xyz:thing")
    with pytest.raises(RegistryError, match="has no attribute 'nope'"):
        import_object("math:nope")
    with pytest.raises(RegistryError, match="must have the form"):
        import_object("math:")
    with pytest.raises(RegistryError, match="must be 'module:attr'"):
        reg.register_lazy("x", "math.pi")


def test_project_registries_are_populated() -> None:
    from bench.attacks import ATTACKS
    from bench.data import DATASETS
    from model_zoo import MODELS

    assert {"mnist5k", "digits"} <= set(DATASETS.names())
    assert {"mlp", "lenet", "cnn", "convnet", "convnet_bn"} <= set(MODELS.names())
    assert "fgsm" in ATTACKS
    for registry in (DATASETS, MODELS, ATTACKS):
        for name in registry.names():
            assert registry.describe(name), f"{registry.kind} {name} has no description"
