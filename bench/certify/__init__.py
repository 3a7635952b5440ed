"""Certified robustness: sound lower bounds beside the attacks' upper bounds.

A certifier proves, per sample and eps, that no perturbation in the ball changes the prediction; the
certified fraction bounds true robust accuracy from below, the attacked fraction from above. Certifiers
are registered like attacks (:data:`CERTIFIERS`, one method per file, each with its declaration):

* ``ibp`` (:mod:`bench.certify.ibp`): interval bound propagation;
* ``crown`` (:mod:`bench.certify.crown`): backward linear relaxation, intermediate bounds by CROWN or IBP;
* ``smoothing`` (:mod:`bench.certify.smoothing`): randomized smoothing's certified L2 radius.
"""

from bench.certify.base import Certifier, CertifyResult
from bench.certify.chain import CertifyError
from bench.certify.registry import CERTIFIERS, CertifierAbilities, certifier_abilities, make_certifier

__all__ = [
    "CERTIFIERS",
    "Certifier",
    "CertifierAbilities",
    "CertifyError",
    "CertifyResult",
    "certifier_abilities",
    "make_certifier",
]
