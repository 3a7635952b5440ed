"""Reference tables of the registries: attacks (with their declarations), data sets, zoo models and
their reference weights. Everything is read from :data:`~bench.attacks.ATTACKS`,
:data:`~bench.data.DATASETS`, :data:`~model_zoo.MODELS` and ``model_zoo/reference/index.json``."""

from __future__ import annotations

import dataclasses
import inspect

from bench.attacks import ATTACKS, make_attack
from bench.certify import CERTIFIERS, certifier_abilities, make_certifier
from bench.cli.catalog import build as build_catalog
from bench.data import DATASETS
from bench.docgen.markdown import code, docstring_args, plain_rst, table
from model_zoo import MODELS, reference
from model_zoo.training import Recipe

DEFAULT_RECIPE = dataclasses.asdict(Recipe())

MINIMAL_EPS_WORDS = {
    "ray": "`ray`: bisection along the attack's one direction (forward passes only)",
    "bisect": "`bisect`: bisection of the radius, each probe a run at per-sample radii",
    None: "none",
}


def _param_docs(cls: type) -> dict[str, str]:
    """Each hyperparameter's line from the ``Args:`` of the class and its bases (the class's own wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(inspect.getmro(cls)):
        docs.update(docstring_args(klass.__doc__))
    return docs


def _summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return plain_rst(" ".join(doc.split("\n\n", 1)[0].split()))


def _cost(cls: type) -> str:
    """The ``Cost:`` paragraph of the attack's docstring (or its nearest base's), in one line."""
    for klass in inspect.getmro(cls):
        for para in (inspect.cleandoc(klass.__doc__ or "")).split("\n\n"):
            if para.startswith("Cost:"):
                return plain_rst(" ".join(para[len("Cost:") :].split()))
    return ""


def attacks_reference() -> str:
    """An overview table, then one section per attack: declaration and hyperparameters with defaults."""
    catalog = build_catalog()["attacks"]
    names = ATTACKS.names()
    overview = []
    for name in names:
        cls = ATTACKS.get(name)
        ab = cls.abilities
        overview.append(
            [
                f"[`{name}`](#{name})",
                ", ".join(catalog[name]["norms"]),
                str(ab.family),
                ab.minimal_eps or "-",
                "yes" if ab.art is not None else "no",
                "yes" if ab.reproducible else "no",
            ]
        )
    parts = [table(["attack", "norms", "family", "minimal eps", "ART counterpart", "reproducible"], overview)]
    for name in names:
        cls = ATTACKS.get(name)
        ab = cls.abilities
        default = make_attack(name)
        docs = _param_docs(cls)
        rows = []
        for f in dataclasses.fields(cls):
            if not f.init or (f.name == "bpda" and not cls.uses_gradients):
                continue
            if f.name == "targeted" and not cls.supports_targeted:
                continue
            value = getattr(default, f.name)
            rows.append([f"`{f.name}`", code(getattr(value, "value", value)), docs.get(f.name, "")])
        parts.append(f"### `{name}`\n\n{_summary(cls)}\n")
        parts.append(
            table(
                ["declaration", "value"],
                [
                    ["norms", ", ".join(f"`{n}`" for n in catalog[name]["norms"])],
                    ["family", f"`{ab.family}`"],
                    ["bounded by eps", "yes" if ab.bounded else "no (eps is ignored)"],
                    ["minimal eps", MINIMAL_EPS_WORDS[ab.minimal_eps]],
                    ["cost", _cost(cls) or "see the attack's docstring"],
                    ["ART counterpart", ab.art_mapping],
                    [
                        "reproducible",
                        "yes: per-sample results exact on equal weights and numerics" if ab.reproducible else "no",
                    ],
                ],
            )
        )
        parts.append(table(["parameter", "default", "meaning"], rows))
    return "\n".join(parts)


def datasets_reference() -> str:
    """The registered data sets with their one-line descriptions."""
    rows = [[f"`{name}`", plain_rst(DATASETS.describe(name))] for name in DATASETS.names()]
    return table(["name", "what"], rows)


def zoo_reference() -> str:
    """The zoo's models with their recipes, then every recorded reference weights file."""
    rows = []
    for name in MODELS.names():
        entry = MODELS.get(name)
        recipe = ", ".join(
            f"{k} {v}"
            for k, v in entry.recipe.as_dict().items()
            if k in ("epochs", "batch_size") or v != DEFAULT_RECIPE[k]
        )
        rows.append([f"`{name}`", plain_rst(entry.description), recipe, entry.recipe_note or ""])
    parts = [table(["name", "architecture", "recipe", "note"], rows)]
    refs = []
    for ref in reference.entries():
        shipped = "ships with the package" if ref.file else "by digest only (`bench zoo import`)"
        accuracy = f"{ref.clean_accuracy:.3f}" if ref.clean_accuracy is not None else ""
        epochs = ref.recipe.get("epochs", MODELS.get(ref.model).recipe.epochs if ref.model in MODELS else "")
        refs.append([f"`{ref.model}`", f"`{ref.dataset}`", epochs, ref.seed, f"`{ref.sha256[:12]}`", accuracy, shipped])
    parts.append("Recorded reference weights (`model_zoo/reference/index.json`; `bench zoo list` shows the same):\n")
    parts.append(table(["model", "data set", "epochs", "seed", "sha256", "clean accuracy", "file"], refs))
    return "\n".join(parts)


def certifiers_reference() -> str:
    """One section per registered certifier: its declaration and parameters with defaults."""
    parts = []
    for name in CERTIFIERS.names():
        cls = CERTIFIERS.get(name)
        declared = certifier_abilities(name)
        default = make_certifier(name)
        docs = _param_docs(cls)
        rows = [
            [
                f"`{f.name}`",
                code(getattr(getattr(default, f.name), "value", getattr(default, f.name))),
                docs.get(f.name, ""),
            ]
            for f in dataclasses.fields(cls)
            if f.init
        ]
        parts.append(f"### `{name}`\n\n{_summary(cls)}\n")
        parts.append(
            table(
                ["declaration", "value"],
                [
                    ["norms", ", ".join(f"`{n.value}`" for n in cls.norms)],
                    [
                        "kind",
                        "a proof for the model itself"
                        if declared.kind == "bound"
                        else "a probabilistic certificate for the smoothed classifier",
                    ],
                    ["layers it bounds", ", ".join(f"`{layer}`" for layer in declared.layers)],
                    ["cost", _cost(cls)],
                    ["ART counterpart", declared.art],
                ],
            )
        )
        parts.append(table(["parameter", "default", "meaning"], rows))
    return "\n".join(parts)
