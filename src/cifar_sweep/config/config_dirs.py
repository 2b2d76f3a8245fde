"""The project's config folder, and a user's own on the command lines that read presets
(report.py, seeds.py, plan.py): `--config-dir DIR` as train.py takes it, turned into the
`hydra.searchpath` override that Hydra's compose API and train.py both read."""

from __future__ import annotations

import re
from pathlib import Path

# the project's own config folder (train.py's `config_path`), for the commands that compose
CONF = Path(__file__).resolve().parents[3] / "conf"
SEARCH_PATH = "hydra.searchpath="  # the override a --config-dir becomes, as train.py reads it


def config_dir_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without `--config-dir DIR` / `--config-dir=DIR` / `-cd DIR`, the `hydra.searchpath`
    override for those folders): the commands that read presets take a user's folder the way
    train.py does, and hand it on to train.py as an override."""
    rest, dirs, args = [], [], iter(argv)
    for arg in args:
        if arg in ("--config-dir", "-cd"):
            dirs.append(next(args, ""))
        elif arg.startswith("--config-dir="):
            dirs.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    if not dirs:
        return rest, []
    paths = ",".join(f"file://{Path(d).expanduser().resolve()}" for d in dirs)
    return rest, [f"{SEARCH_PATH}[{paths}]"]


def user_dirs(overrides: list[str]) -> list[Path]:
    """The folders a `hydra.searchpath` override among `overrides` names."""
    return [Path(p) for o in overrides if o.startswith(SEARCH_PATH)
            for p in re.findall(r"file://([^,\]]+)", o)]
