"""The caps on amounts of work (``bench/limits.py``), as the security page's table."""

from __future__ import annotations

from bench import limits
from bench.docgen.markdown import table

WHERE = {
    "steps": "`bim`, `pgd`, `apgd`, `apgd_t`, `fooling_images`, `targeted_ascent`, `adversarial_noise`",
    "restarts": "`bim`, `pgd`, `apgd`, `apgd_t`",
    "n_target_classes": "`apgd_t`",
    "max_iter": "`square` (queries); ART attacks' `max_iter`",
    "draws": "`uniform_noise`, `gaussian_noise`, `salt_pepper`",
    "source_size": "`adversarial_noise`",
    "max_eval": "ART attacks (`art:HopSkipJump`, ...)",
    "init_eval": "ART attacks",
    "nb_random_init": "ART attacks",
    "num_random_init": "ART attacks",
    "max_translation": "ART attacks",
    "nb_grads": "ART attacks",
    "epochs": "a recipe (`models[].recipe.epochs`)",
    "adv_steps": "a recipe (`models[].recipe.adv_steps`)",
}


def limits_reference() -> str:
    """Every amount-of-work cap with where it applies, then the other caps on what a run computes."""
    rows = [[f"`{field}`", f"{cap:,}", WHERE.get(field, "")] for field, cap in limits.WORK_CAPS.items()]
    parts = [table(["field", "at most", "where"], rows)]
    other = [
        ["`batch_size` (a suite's, a recipe's, `bench.evaluate`'s)", f"{limits.BATCH_SIZE:,}"],
        ["epsilons of one attack (a suite's list, `bench.evaluate`'s `epsilons`)", f"{limits.EPSILONS:,}"],
        ["samples (`dataset.n`, an attack's `n`, `bench.evaluate`'s inputs)", f"{limits.FLAG_SAMPLES:,}"],
        ["rows of a run directory's `results.csv` / `results.parquet` read back", f"{limits.RESULT_ROWS:,}"],
        ["rows of a run directory's `samples.parquet` read back", f"{limits.SAMPLE_ROWS:,}"],
        ["`bench perf --threads`", f"{limits.THREADS_PER_CORE} per core of the machine"],
    ]
    parts.append(table(["what", "at most"], other))
    return "\n".join(parts)
