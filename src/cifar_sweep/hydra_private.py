"""Every use of Hydra's private API (`hydra._internal`), in one place, pinned to the Hydra versions
it was tested with: Hydra has no public API for these three, and a private one may change in any
release (Hydra 1.4 changes how sweepers and launchers are built), so an upgrade must fail here,
loudly, in tests/test_hydra_private.py, not silently in a sweep.

- `BasicSweeper`: the cartesian product of a sweep's overrides, which `hydra/sweeper=planned`
  extends (hydra_plugins/cifar_sweep_planned) to launch only the jobs left to train.
- `apply_overrides`: Hydra's own application of value overrides to a composed config
  (`ConfigLoaderImpl._apply_overrides_to_config`), which plan/job_configs.py runs in memory for
  each job of a sweep instead of composing every job again.
- `locate`: a `_target_` string to its object, with the import error that names the cause
  (`hydra.utils.get_object` wraps it, but logs an error line of its own on a failure, which a
  config check reporting one line must not print).
"""

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import _locate as locate

# the hydra-core releases (major.minor) these were read and tested against: pyproject.toml's
# range says the same (hydra-core>=1.3,<1.4)
TESTED = ("1.3",)

apply_overrides = ConfigLoaderImpl._apply_overrides_to_config

__all__ = ["TESTED", "BasicSweeper", "apply_overrides", "locate"]
