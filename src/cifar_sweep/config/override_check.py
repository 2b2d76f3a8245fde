"""Hydra's own mistakes on the command line, as one line each before Hydra composes anything: an
override its grammar refuses (`data.root=~/x`), a value given to a config group (`lr=0.01`), an
option a group does not have (`optimizer=adamw`), a key the config does not have
(`trainer.epoch=3`, with the nearest real one). Hydra says each of these in a traceback of 10 to
25 lines that does not always name what to type; `train.py` and `plan.py` exit 2 with this line.

What is checked is what needs no composition: the groups' options are the files of `conf/` and
of the user's folders (`--config-dir`, `hydra.searchpath`); the keys of the sections that are
not groups are config.yaml's. Keys inside a group's option (`model.width`) depend on the option
chosen: the config's own checks (schema.py) name those after composing.
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path
from typing import cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import HydraException  # the lexer raises it, the parser its subclass
from omegaconf import OmegaConf

from cifar_sweep.config.config_dirs import CONF, config_dir_args, user_dirs


def groups(folders: list[Path]) -> dict[str, list[str]]:
    """Each config group (a folder of option files, `hydra/...` aside) and its options."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for option in folder.rglob("*.yaml"):
            group = option.parent.relative_to(folder).as_posix()
            if group != "." and not group.startswith("hydra"):
                found.setdefault(group, set()).add(option.stem)
    return {g: sorted(o) for g, o in found.items()}


def _grammar_error(arg: str, exc: Exception) -> str:
    key, _, value = arg.partition("=")
    if value.startswith("~"):  # the shell did not expand it (no / or = before it) and Hydra's
        # grammar has no ~ in a value
        return (f"{arg}: Hydra's override grammar cannot read '~' here; for your home folder "
                f"write {key}=$HOME{value[1:]} (the shell expands it)")
    return (f"{arg}: Hydra's override grammar cannot read this value "
            f"({str(exc).splitlines()[0][:200]}); quote it: '{key}=\"{value}\"'")


def _values(override: Override) -> list:
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return list(value.list)
    return value if isinstance(value, list) and override.is_sweep_override() else [value]


def _group_error(override: Override, options: list[str], keys: list[str]) -> str | None:
    group = override.key_or_group
    for value in _values(override):
        if value is None or str(value) in options:  # `experiment=null`; an option named 18
            continue
        if isinstance(value, (int, float, bool)):
            meant = keys[0] if len(keys) == 1 else "value" if "value" in keys else None
            hint = (f"; the setting you may mean: {group}.{meant}={value}" if meant
                    else f"; its settings: {', '.join(f'{group}.{k}' for k in keys)}" if keys
                    else "")
            return (f"{group}={value}: {group} is a group of options "
                    f"({', '.join(options)}), not a value{hint}")
        if isinstance(value, str) and value not in options:
            near = get_close_matches(value, options, n=1)
            return (f"{group}={value}: no such option"
                    + (f" (did you mean {group}={near[0]}?)" if near else "")
                    + f"; allowed: {', '.join(options)}")
    return None


def _key_error(key: str, sections: dict, group_names: set[str]) -> str | None:
    head, _, rest = key.partition(".")
    if head in group_names or head.startswith("hydra"):
        return None  # an option's keys: checked once composed
    known = sorted(set(sections) | group_names)
    if head not in sections:
        near = get_close_matches(head, known, n=1)
        return (f"{key}: no such setting"
                + (f" (did you mean {near[0]}.{rest}?)" if near and rest else
                   f" (did you mean {near[0]}?)" if near else "")
                + f"; the config's sections: {', '.join(known)}")
    node, path = sections[head], head
    for part in rest.split(".") if rest else []:
        if not isinstance(node, dict) or not node:
            return None  # a free-form value (a list, a dict of anything): not ours to judge
        if part not in node:
            near = get_close_matches(part, list(node), n=1)
            return (f"{key}: no such setting"
                    + (f" (did you mean {path}.{near[0]}?)" if near else "")
                    + f"; {path} has: {', '.join(node)}")
        node, path = node[part], f"{path}.{part}"
    return None


def _sections(folders: list[Path]) -> dict:
    """config.yaml's sections that are not groups, with their keys; the schema's fields that
    config.yaml leaves out (`study.paper`: any value); and, as any value, the sections a preset
    of the global package adds (a user's own preset may)."""
    import dataclasses

    from cifar_sweep.config import schema

    sections = {str(k): v for k, v in cast(dict, OmegaConf.to_container(
        OmegaConf.load(CONF / "config.yaml"))).items() if k != "defaults"}
    for name, keys in sections.items():
        typed = getattr(schema, name.capitalize(), None)
        if isinstance(keys, dict) and dataclasses.is_dataclass(typed):
            for f in dataclasses.fields(typed):
                keys.setdefault(f.name, None)
    for folder in folders:
        for option in folder.rglob("*.yaml"):
            if "@package _global_" in option.read_text(errors="replace")[:500]:
                for key in OmegaConf.load(option) or {}:
                    if key != "defaults":
                        sections.setdefault(str(key), None)
    return sections


def problem(argv: list[str]) -> str | None:
    """The first mistake among the command line's overrides, as one line; None if none."""
    argv, search_path = config_dir_args(argv)
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    overrides = args + search_path
    folders = [CONF, *(d for d in user_dirs(overrides) if d.is_dir())]
    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        try:
            parsed.append(parser.parse_override(arg))
        except HydraException as exc:
            return _grammar_error(arg, exc)
    options = groups(folders)
    sections = _sections(folders)
    for override in parsed:
        if override.is_add() or override.is_delete() or override.package:
            continue  # `+key=...` and `~key` say they know the config does not (or does) hold it
        key = override.key_or_group
        if key in options:
            keys = sorted({str(k) for o in options[key] for f in folders
                           if (f / key / f"{o}.yaml").is_file()
                           for k in (OmegaConf.load(f / key / f"{o}.yaml") or {})
                           if k not in ("defaults", "_target_")})
            error = _group_error(override, options[key], keys)
        else:
            error = _key_error(key, sections, set(options))
        if error:
            return error
    return None


def composition_error_line(exc: Exception) -> str:
    """Hydra's multi-line composition error (what is missing, the options there are, the search
    path) as one line, without the search path."""
    text = str(exc).split("Config search path", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].endswith(":"):  # "Available options in 'lr':" and a list
        return f"{lines[0]}; {lines[1][:-1].lower()}: {', '.join(lines[2:])}"
    return "; ".join(lines)
