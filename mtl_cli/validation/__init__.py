"""Validation: the one gate every config passes before anything is built or written.

``validate(cfg) -> Plan`` (:mod:`.plan`) runs every check and reports every problem at once;
the checks live by what they judge: :mod:`.optim` (optimizer, scheduler, ``_target_``s),
:mod:`.data` (data sources), :mod:`.tasks`, :mod:`.model` (architecture against backbone and
inputs) and :mod:`.run` (device, monitor, objectives, baselines). Generic node checks shared
with components are in :mod:`mtl_cli.config.checks`.
"""

from .plan import Plan, validate

__all__ = ["Plan", "validate"]
