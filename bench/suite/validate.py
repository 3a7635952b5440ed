"""Validating a suite: the schema (pydantic), then names and parameters against the registries.

Every problem is one line naming the file and the field path, for example
``suites/x.yaml: attacks[1].params: attack 'fgsm' has no parameter 'steps' (allowed: ...)``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bench.attacks import ATTACKS, AttackError, make_attack
from bench.certify import CERTIFIERS, CertifyError, make_certifier
from bench.data import DATASETS
from bench.errors import describe_validation_error
from bench.registry import RegistryError
from bench.suite.schema import ModelSpec, Suite, SuiteError
from model_zoo import MODELS
from model_zoo.external import ExternalModelError, check_trusted, resolve_factory, weights_format


def validate(
    raw: dict[str, Any], *, source: Path | str = "<suite>", base: Path | None = None, trust: Sequence[str] = ()
) -> Suite:
    """Validate a suite mapping: schema, then registry names and attack parameters.

    ``factory:`` modules must be trusted (:func:`model_zoo.external.check_trusted`):
    the zoo, ``$BENCH_TRUSTED_MODULES``, ``trust`` (``--trust``) and modules under
    ``base``, the suite file's own folder. Nothing else is imported.
    """
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(describe_validation_error(exc, source=str(source))) from None
    problems = list(_semantic_problems(suite, base=base, trust=tuple(trust)))
    if problems:
        raise SuiteError("\n".join(f"{source}: {p}" for p in problems))
    return suite


def _semantic_problems(suite: Suite, *, base: Path | None, trust: tuple[str, ...]) -> Iterator[str]:
    if suite.dataset.name not in DATASETS:
        yield f"dataset.name: {DATASETS.unknown_message(suite.dataset.name)}"
    for i, model in enumerate(suite.models):
        if model.external:
            yield from (f"models[{i}].{p}" for p in _external_problems(model, base=base, trust=trust))
            continue
        if model.name not in MODELS:
            yield f"models[{i}].name: {MODELS.unknown_message(model.name)}"
            continue
        if model.recipe:
            wrong = list(field_type_problems(type(MODELS.get(model.name).recipe), model.recipe))
            if wrong:
                yield from (f"models[{i}].recipe.{p}" for p in wrong)
                continue
            try:
                MODELS.get(model.name).recipe.replace(**model.recipe)
            except (ValueError, TypeError) as exc:
                yield f"models[{i}].recipe: {exc}"
    for i, attack in enumerate(suite.attacks):
        if ":" in attack.name and attack.name not in ATTACKS and ATTACKS.namespace_of(attack.name) is None:
            try:  # an attack plugin "module:attr" is imported: only from a trusted module
                check_trusted(attack.name, base=base, trust=(*trust, "bench"), what="attack plugin")
            except ExternalModelError as exc:
                yield f"attacks[{i}].name: {exc}"
                continue
        try:
            ATTACKS.check(attack.name)  # a namespaced name ("art:DeepFool") is resolved and validated
        except (RegistryError, AttackError) as exc:
            yield f"attacks[{i}].name: {exc}"
            continue
        cls = None if ATTACKS.namespace_of(attack.name) is not None else ATTACKS.get(attack.name)
        wrong = list(field_type_problems(cls, attack.params)) if dataclasses.is_dataclass(cls) else []
        if wrong:  # before make_attack: targeted="false" is a true string, not False
            yield from (f"attacks[{i}].params.{p}" for p in wrong)
            continue
        try:
            made = make_attack(attack.name, **attack.params)
        except (AttackError, RegistryError) as exc:
            yield f"attacks[{i}].params: {exc}"
        else:
            if attack.target_class is not None and not made.targeted:
                yield (
                    f"attacks[{i}].target_class: only targeted attacks take a target class "
                    "(set params.targeted: true, or remove target_class)"
                )
            elif made.targeted and made.target_selection == "given" and attack.target_class is None:
                # "given" targets come from target_class in a suite; without it the run could only fail mid-way.
                yield (
                    f"attacks[{i}].params.target_mode: 'given' needs a target_class in the suite "
                    "(or use target_mode random or least_likely)"
                )
            field = f"attacks[{i}].epsilons" if attack.epsilons is not None else "epsilons"
            yield from (f"{field}: {p}" for p in eps_bound_problems(made.norm.value, suite.epsilons_for(attack)))
        if attack.minimal_eps and ATTACKS.abilities(attack.name).minimal_eps is None:
            allowed = ", ".join(ATTACKS.declaring(lambda abilities: abilities.minimal_eps is not None))
            yield f"attacks[{i}].minimal_eps: not available for attack {attack.name!r} (allowed: {allowed})"
        for eps in suite.epsilons_for(attack):
            if not math.isfinite(eps):
                yield f"attacks[{i}].epsilons: {eps} is not finite"
    yield from _certifier_problems(suite)


def _certifier_problems(suite: Suite) -> Iterator[str]:
    """Certifier names, parameters (types first) and eps grids, each naming ``certify[i]``."""
    for i, spec in enumerate(suite.certify):
        if spec.name not in CERTIFIERS:
            yield f"certify[{i}].name: unknown certifier {spec.name!r} (known: {', '.join(CERTIFIERS.names())})"
            continue
        wrong = list(field_type_problems(CERTIFIERS.get(spec.name), spec.params))
        if wrong:
            yield from (f"certify[{i}].params.{p}" for p in wrong)
            continue
        try:
            made = make_certifier(spec.name, **spec.params)
        except CertifyError as exc:
            yield f"certify[{i}].params: {exc}"
            continue
        field = f"certify[{i}].epsilons" if spec.epsilons is not None else "epsilons"
        yield from (f"{field}: {p}" for p in eps_bound_problems(made.norm.value, suite.epsilons_for(spec)))


def eps_bound_problems(
    norm: str,
    epsilons: list[float],
    *,
    width: float = 1.0,
    input_shape: tuple[int, int, int] | None = None,
) -> Iterator[str]:
    """Epsilons outside what ``norm`` can mean, as messages naming the allowed range.

    ``width`` is the pixel range's width (1 for [0, 1], every registered data
    set's bounds). Without ``input_shape`` (suite validation, before the data
    is loaded) only linf (eps <= width) and l0 (a fraction, <= 1) are checked;
    with it also l2 (eps <= width * sqrt(C*H*W), the diagonal of the pixel
    cube) and patch (a side of at most min(H, W) pixels).
    """
    limits: dict[str, tuple[float, str]] = {
        "linf": (width, f"0 <= eps <= {width:g}, the width of the pixel range: every pixel may move at most that far"),
        "l0": (1.0, "0 <= eps <= 1, a fraction of the pixel positions"),
    }
    if input_shape is not None:
        c, h, w = input_shape
        diagonal = width * math.sqrt(c * h * w)
        limits["l2"] = (diagonal, f"0 <= eps <= {diagonal:.4g}, the L2 diameter of {c}x{h}x{w} inputs")
        limits["patch"] = (float(min(h, w)), f"a patch side of 0 to {min(h, w)} pixels")
    if norm not in limits:
        return
    limit, allowed = limits[norm]
    too_large = [e for e in epsilons if e > limit]
    if too_large:
        shown = ", ".join(f"{e:g}" for e in too_large)
        yield f"{shown} out of bounds for norm {norm} (allowed: {allowed})"


def field_type_problems(cls: Any, values: dict[str, Any]) -> Iterator[str]:
    """``key: expected ...`` for each value whose type does not match ``cls``'s dataclass field annotation.

    Strict (pydantic's strict mode, field by field): a boolean must be a boolean
    and an integer an integer, never a string; a float field takes ints.
    Enum fields (``norm: linf``) are left to the attack; unknown keys are
    left to the caller (it names the allowed ones).
    """
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):
        return
    for f in dataclasses.fields(cls):
        if f.name not in values or f.name not in hints:
            continue
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            continue  # the attack names the values it allows (norm: linf or l2 ...)
        try:
            TypeAdapter(hint).validate_python(values[f.name], strict=True)
        except ValidationError as exc:
            if str(exc.errors()[0]["type"]).endswith("_type"):  # a wrong type; wrong values: the attack says
                yield f"{f.name}: {describe_validation_error(exc, top_level=None, first_only=True)}"


def _external_problems(model: ModelSpec, *, base: Path | None, trust: tuple[str, ...]) -> Iterator[str]:
    """Check an external model's factory (trusted first), architecture and weights file without loading them."""
    if model.factory is not None:
        try:
            resolve_factory(model.factory, base=base, trust=trust)
        except ExternalModelError as exc:
            yield f"factory: {exc}"
    elif model.name not in MODELS:
        yield f"name: {MODELS.unknown_message(model.name)} (or give 'factory: module:attr')"
    if model.weights is not None:
        path = Path(model.weights)
        try:
            weights_format(path)
        except ExternalModelError as exc:
            yield f"weights: {exc}"
            return
        if not path.is_file():
            yield f"weights: file {model.weights} not found"
