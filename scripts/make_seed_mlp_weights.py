"""Write ``suites/weights/seed_mlp_784_200_10.npz``: the perceptron that ``suites/seed_mlp_weights.yaml`` attacks.

The seed's numpy assignment shipped its perceptron as named arrays
(``fc1.weight``, ``fc1.bias``, ...) in the ``x @ W + b`` layout. Those weights
are not available here, so this script makes an equivalent file: it trains the
zoo's ``mlp`` (784-200-10, ReLU; Adam lr 0.01, weight decay 1e-6, 15 epochs,
batch 100, seed 0) on the 4,000 mnist5k training digits and writes its linear
layers as

* ``fc1.weight`` (784, 200), ``fc1.bias`` (200,), ``fc2.weight`` (200, 10), ``fc2.bias`` (10,)

in the ``in_out`` layout (weights stored ``(in_features, out_features)``), in
float16 to keep the committed file small (about 0.3 MB); they are cast back
to float32 on load. The model's ``Normalize`` layer (mean 0.5, std 0.5: inputs
mapped to [-1, 1], as the seeds did) is part of the architecture, not the file.

Run from the repository root: ``.venv/bin/python scripts/make_seed_mlp_weights.py``
(about 20 s on a 2-core CPU; an mlp already in the checkpoint cache is reused). Training is seeded;
floating-point sums may still differ across torch builds and thread counts, so a rebuilt file need not be
bit-identical to the committed one (whose sha256 every run records in models.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch import nn

from bench.data import load_dataset
from model_zoo import get_model
from model_zoo.external import linear_layers

OUT = Path(__file__).resolve().parent.parent / "suites" / "weights" / "seed_mlp_784_200_10.npz"


def export_npz(model: nn.Module, path: Path, *, dtype: type[np.floating] = np.float16) -> dict[str, tuple[int, ...]]:
    """Write ``model``'s linear layers as ``fc<k>.weight`` (in, out) / ``fc<k>.bias`` arrays; returns their shapes."""
    state = model.state_dict()
    arrays: dict[str, np.ndarray] = {}
    for k, name in enumerate(linear_layers(model), start=1):
        arrays[f"fc{k}.weight"] = state[f"{name}.weight"].detach().cpu().numpy().T.astype(dtype)
        arrays[f"fc{k}.bias"] = state[f"{name}.bias"].detach().cpu().numpy().astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return {k: v.shape for k, v in arrays.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the .npz (default {OUT})")
    args = parser.parse_args()
    trained = get_model("mlp", "mnist5k", train=load_dataset("mnist5k", "train"), seed=0)
    shapes = export_npz(trained.model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {shapes}")


if __name__ == "__main__":
    main()
