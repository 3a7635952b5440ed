"""Suite files: YAML -> validated, frozen objects (pydantic), and their expansion into cells.

A suite names a data set, models, attacks and epsilons. It may ``include:``
other suite files (paths relative to the including file); included mappings
are merged key by key, the including file winning, and lists are replaced
whole. Every error names the file and the field path, for example
``suites/x.yaml: attacks[1].params: attack 'fgsm' has no parameter 'steps' (allowed: ...)``.

Modules: :mod:`~bench.suite.schema` (Suite, specs, cells), :mod:`~bench.suite.rules`
(the regression gate's rule schema), :mod:`~bench.suite.load` (YAML, includes),
:mod:`~bench.suite.validate` (registry names and parameters). The suite imports
no gate and no MLflow.
"""

from bench.suite.load import dump_yaml, load_raw, load_suite, read_yaml
from bench.suite.rules import (
    RULES,
    AllowFlips,
    CheckRule,
    Floor,
    GateRule,
    MaxDrop,
    RuleError,
    parse_floor,
    parse_rules,
)
from bench.suite.schema import (
    EXECUTION_FIELDS,
    SAFE_NAME,
    AttackSpec,
    Cell,
    CertifierSpec,
    CertifyCell,
    DatasetSpec,
    ModelSpec,
    Suite,
    SuiteError,
    TrackingSpec,
    check_n_jobs,
    expand,
    expand_certify,
)
from bench.suite.validate import eps_bound_problems, validate

__all__ = [
    "EXECUTION_FIELDS",
    "RULES",
    "SAFE_NAME",
    "AllowFlips",
    "AttackSpec",
    "Cell",
    "CertifierSpec",
    "CertifyCell",
    "CheckRule",
    "DatasetSpec",
    "Floor",
    "GateRule",
    "MaxDrop",
    "ModelSpec",
    "RuleError",
    "Suite",
    "SuiteError",
    "TrackingSpec",
    "check_n_jobs",
    "dump_yaml",
    "eps_bound_problems",
    "expand",
    "expand_certify",
    "load_raw",
    "load_suite",
    "parse_floor",
    "parse_rules",
    "read_yaml",
    "validate",
]
