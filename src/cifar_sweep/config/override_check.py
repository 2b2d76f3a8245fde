"""Hydra's own mistakes on the command line, as one line each before Hydra composes anything: an
override its grammar refuses (`data.root=~/x`), a value given to a config group (`lr=0.01`), an
option a group does not have (`optimizer=adamw`), a key the config does not have
(`trainer.epoch=3`, with the nearest real one). Hydra says each of these in a traceback of 10 to
25 lines that does not always name what to type; `train.py` and `plan.py` exit 2 with this line.

What is checked is what needs no composition: the groups' options are the files of `conf/` and
of the user's folders (`--config-dir`, `hydra.searchpath`); the keys of the sections that are
not groups are config.yaml's; a key inside a group's option (`model.width`) is checked against
the option chosen. A `hydra.*` key alone needs Hydra's own config, composed for it.
"""

from __future__ import annotations

from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import HydraException  # the lexer raises it, the parser its subclass
from omegaconf import DictConfig, OmegaConf

from cifar_sweep.config.config_dirs import CONF, config_dir_args, user_dirs


@lru_cache(maxsize=512)
def _parsed(path: Path, mtime: float) -> DictConfig:
    return cast(DictConfig, OmegaConf.load(path))


@lru_cache(maxsize=512)
def _head(path: Path, mtime: float) -> str:
    return path.read_text(errors="replace")[:500]


def _load(path: Path) -> DictConfig:
    """A config file, parsed once per process while it is unchanged (the tests ask for the same
    files many times); read only: callers take `OmegaConf.to_container` of it to change it."""
    return _parsed(path, path.stat().st_mtime)


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


def _hydra_key_error(key: str, choices: list[str], folders: list[Path]) -> str | None:
    """A `hydra.*` key (`hydra.launcher.n_jobz`) against Hydra's own config as the launcher,
    sweeper and presets chosen make it: Hydra's answer is a 6-line block ending in "Set the
    environment variable HYDRA_FULL_ERROR". Composed only when such a key is given (about 0.3 s);
    a key under a free-form node (`hydra.job.env_set.X`, a sweeper's `params`) is Hydra's to take."""
    from hydra import compose, initialize_config_dir

    search = [f"hydra.searchpath=[{','.join(f'file://{f}' for f in folders[1:])}]"] \
        if len(folders) > 1 else []
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[*choices, *search], return_hydra_config=True)
    except Exception:  # a choice Hydra refuses: said by the checks after this one
        return None
    node, path = cfg, ""
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None  # a value given a sub-key: Hydra's own line says it
        if ".".join(parts[depth:]) in node:  # a key with dots in it (a sweeper's `lr.value`)
            return None
        if part not in node:
            if OmegaConf.get_type(node) in (dict, None):  # a mapping of anything: new keys take +
                return (f"{key}: {path} holds no {'.'.join(parts[depth:])} yet; add it with "
                        f"+{key}=<value> (+ adds a key the config lacks)")
            keys = [str(k) for k in node if not str(k).startswith("_")]
            near = get_close_matches(part, keys, n=1)
            chosen = {"hydra.launcher": "hydra/launcher", "hydra.sweeper": "hydra/sweeper"}.get(path)
            where = (f"{path} (hydra/{chosen.split('/')[1]}="
                     f"{cfg.hydra.runtime.choices.get(chosen)})" if chosen else path)
            return (f"{key}: no such setting" + (f" (did you mean {path}.{near[0]}?)" if near else "")
                    + f"; {where} has: {', '.join(keys)}")
        node, path = node[part], f"{path}.{part}" if path else part
    return None


def _sections(folders: list[Path]) -> dict:
    """config.yaml's sections that are not groups, with their keys; the schema's fields that
    config.yaml leaves out (`study.paper`: any value); and, as any value, the sections a preset
    of the global package adds (a user's own preset may)."""
    import dataclasses

    from cifar_sweep.config import schema

    sections = {str(k): v for k, v in cast(dict, OmegaConf.to_container(
        _load(CONF / "config.yaml"))).items() if k != "defaults"}
    for name, keys in sections.items():
        typed = schema.SECTIONS.get(name)
        if isinstance(keys, dict) and typed is not None:
            for f in dataclasses.fields(typed):
                keys.setdefault(f.name, None)
    for folder in folders:
        for option in folder.rglob("*.yaml"):
            if _is_global(option):
                for key in _load(option) or {}:
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
    chosen = _chosen_options(parsed, options, folders)
    for override in parsed:
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            continue  # `+key=...` and `~key` say they know the config does not (or does) hold it
        key = override.key_or_group
        if key in ("hydra/launcher", "hydra/sweeper"):
            error = _group_error(override, _hydra_options(key, folders), [])
        elif key in options:
            keys = sorted({str(k) for o in options[key] for f in folders
                           if (f / key / f"{o}.yaml").is_file()
                           for k in (_load(f / key / f"{o}.yaml") or {})
                           if k != "defaults" and not str(k).startswith("_")})
            error = _group_error(override, options[key], keys)
        elif key.partition(".")[0] in options:
            error = _option_key_error(key, chosen, options, folders, sections)
            meant = _full_name(key.partition(".")[2], sections, chosen, folders) if error and \
                "did you mean" not in error and "add it with" not in error else None
            if error and meant and "not a section" not in error and ";" in error:
                cut = error.index(";")
                error = f"{error[:cut]} (did you mean {meant}?){error[cut:]}"
        elif key.startswith("hydra."):
            error = _hydra_key_error(key, [str(o.input_line) for o in parsed
                                           if o.key_or_group in options
                                           or o.key_or_group.startswith("hydra/")], folders)
        else:
            error = _key_error(key, sections, set(options))
            meant = _full_name(key, sections, chosen, folders) if error and "." not in key else None
            if error and meant:
                error = f"{key}: no such setting (did you mean {meant}?)"
        if error:
            return error
    for override in parsed:  # `+key=...` for a key the config has: Hydra refuses to add it
        key = override.key_or_group
        if override.is_add() and key not in options and _exists(key, sections, chosen, folders):
            value = override.input_line.partition("=")[2] if override.input_line else "..."
            return (f"+{key}={value}: {key} is already a setting; write {key}={value} (+ adds "
                    "a key the config lacks)")
    return None


def _settings(sections: dict, chosen: tuple[dict[str, set[str]], dict],
              folders: list[Path]) -> list[str]:
    """Every setting's full name: the sections' keys and the chosen options' settings."""
    names = [f"{s}.{k}" for s, keys in sections.items() if isinstance(keys, dict) for k in keys]
    for group, options in chosen[0].items():
        for option in sorted(options):
            tree = _option_tree(folders, group, option)
            if tree is not None and not _is_global(cast(Path, _option_file(folders, group, option))):
                names += [f"{group}.{leaf}" for leaf in _leaves(tree)]
    return names


def _full_name(name: str, sections: dict, chosen: tuple[dict[str, set[str]], dict],
               folders: list[Path]) -> str | None:
    """The setting a key written without its section (or under another one) means: `epochs`
    is trainer.epochs, `momentum` optimizer.momentum, `lr` lr.value; None where none is near."""
    names = _settings(sections, chosen, folders)
    if f"{name}.value" in names:  # `lr`: the group's value
        return f"{name}.value"
    last: dict[str, str] = {}
    for full in names:
        last.setdefault(full.rsplit(".", 1)[-1], full)
    near = get_close_matches(name.rsplit(".", 1)[-1], list(last), n=1, cutoff=0.8)
    return last[near[0]] if near else None


def _exists(key: str, sections: dict, chosen: tuple[dict[str, set[str]], dict],
            folders: list[Path]) -> bool:
    return key in _settings(sections, chosen, folders)


def _hydra_options(group: str, folders: list[Path]) -> list[str]:
    """The launchers or sweepers there are: the plugins' own (Hydra's config store, filled as
    it finds its plugins) and the option files of conf/ and the user's folders."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the installed plugins' configs
    node = ConfigStore.instance().repo.get("hydra", {}).get(group.split("/", 1)[1], {})
    found = {str(name).removesuffix(".yaml") for name in node}
    found |= {f.stem for folder in folders for f in (folder / group).glob("*.yaml")}
    return sorted(found)


# --- keys inside a group's option (`lr.vale`, `model.dropuot`, `data.imagesize`) --------------

def _option_file(folders: list[Path], group: str, option: str) -> Path | None:
    found = [f / group / f"{option}.yaml" for f in folders if (f / group / f"{option}.yaml").is_file()]
    return found[-1] if found else None  # a user's folder comes later and wins, as in Hydra


def _is_global(path: Path) -> bool:
    return "@package _global_" in _head(path, path.stat().st_mtime)


def _option_tree(folders: list[Path], group: str, option: str, depth: int = 0) -> dict | None:
    """An option's own config, the options it extends within its group (`data=cifar10_jpeg`'s
    `defaults: [image_folder]`) merged under it; None where there is no such file."""
    path = _option_file(folders, group, option)
    if path is None or depth > 10:
        return None
    own = cast(dict, OmegaConf.to_container(_load(path))) or {}
    tree: dict = {}
    for entry in own.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_":
            base = _option_tree(folders, group, entry, depth + 1)
            if base is not None:
                tree = cast(dict, OmegaConf.to_container(OmegaConf.merge(tree, base)))
    return cast(dict, OmegaConf.to_container(OmegaConf.merge(tree, own)))


def _preset_choices(folders: list[Path], group: str, option: str, choices: dict,
                    extra: dict, depth: int = 0) -> None:
    """What a global preset (`experiment=...`, `ablation=...`, `+preset_optimizer=...`) chooses:
    the options its defaults override and its sweeper's `params` sweep (into `choices`), and the
    keys it sets inside groups (into `extra`)."""
    path = _option_file(folders, group, option)
    if path is None or depth > 10 or not _is_global(path):
        return
    preset = cast(dict, OmegaConf.to_container(_load(path))) or {}
    for entry in preset.get("defaults") or []:
        if isinstance(entry, dict):
            for name, value in entry.items():
                target = str(name).removeprefix("override").strip().lstrip("/")
                if value is not None:
                    choices.setdefault(target, set()).add(str(value))
                    _preset_choices(folders, target, str(value), choices, extra, depth + 1)
    params = ((preset.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    for name, values in params.items():
        target = str(name).lstrip("+")
        for value in str(values).split(","):
            if _option_file(folders, target, value.strip()) is not None:
                choices.setdefault(target, set()).add(value.strip())
                _preset_choices(folders, target, value.strip(), choices, extra, depth + 1)
    for name, node in preset.items():
        if name not in ("defaults", "hydra") and isinstance(node, dict):
            extra[str(name)] = OmegaConf.to_container(OmegaConf.merge(extra.get(str(name), {}), node))


def _chosen_options(parsed: list[Override], options: dict[str, list[str]],
                    folders: list[Path]) -> tuple[dict[str, set[str]], dict]:
    """Each group's options this command line can compose (the command line's own choice, else
    its presets', else config.yaml's default), and the keys its presets set inside groups."""
    defaults: dict[str, set[str]] = {}
    for entry in OmegaConf.to_container(_load(CONF / "config.yaml").defaults) or []:
        if isinstance(entry, dict):
            for name, value in entry.items():
                if value is not None and not str(name).startswith("override"):
                    defaults[str(name)] = {str(value)}
    given: dict[str, set[str]] = {}
    for override in parsed:
        group = override.key_or_group
        if group in options and not override.is_delete() and not override.package:
            given[group] = {str(v) for v in _values(override) if v is not None}
    from_presets: dict[str, set[str]] = {}
    extra: dict = {}
    for group, chosen in {**defaults, **given}.items():
        for option in chosen:
            _preset_choices(folders, group, option, from_presets, extra)
    return {**defaults, **from_presets, **given}, extra


def _leaves(node: dict, prefix: str = "") -> list[str]:
    """The settings a user types under a node: its leaves, without the internal keys
    (`_target_`, `_partial_`) and those that only repeat another setting (`${data.root}`)."""
    found = []
    for key, value in node.items():
        if str(key).startswith("_") or key == "defaults":
            continue
        if isinstance(value, dict) and value:
            found += _leaves(value, f"{prefix}{key}.")
        elif not (isinstance(value, str) and value.startswith("${")):
            found.append(f"{prefix}{key}")
    return found


def _schema_fields(tree: dict, rest: str, group: str) -> list[str]:
    """The settings the schema knows for the `_target_` nodes of `group`'s option's tree (at
    `rest`'s level: their constructors' arguments) that the option does not set: `+` adds them
    (`+optimizer.dampening=0.1`)."""
    from cifar_sweep.config import schema

    fields = []
    for prefix in ("", *(f"{k}." for k, v in tree.items() if isinstance(v, dict))):
        node = tree if not prefix else tree[prefix[:-1]]
        known = schema.target_fields(f"{group}.{prefix}".rstrip("."), str(node.get("_target_")))
        fields += [f"{prefix}{name}" for name in known or () if name not in node]
    return fields


def _option_key_error(key: str, chosen: tuple[dict[str, set[str]], dict],
                      options: dict[str, list[str]], folders: list[Path],
                      sections: dict) -> str | None:
    group, _, rest = key.partition(".")
    picked, extra = chosen
    if not rest:
        return None
    some = _option_file(folders, group, options[group][0])
    if some is not None and _is_global(some):  # a preset's keys land in other sections
        meant = rest if _key_error(rest, sections, set(options)) is None and \
            rest.partition(".")[0] in sections else None
        return (f"{key}: {group} is a group of presets ({', '.join(options[group])}), not a "
                f"section: choose one with {group}=<name>"
                + (f"; the setting you may mean: {meant}" if meant else ""))
    for option in sorted(picked.get(group, ())):
        tree = _option_tree(folders, group, option)
        if tree is None:
            continue  # an option that is not there: its own check says so
        if group in extra:
            tree = cast(dict, OmegaConf.to_container(OmegaConf.merge(tree, extra[group])))
        node: object = tree
        for part in rest.split("."):
            if not isinstance(node, dict) or part.startswith("_") and part in node:
                break  # a free-form value, or an internal key given on purpose
            if part not in node:
                line = _missing_key_line(key, group, option, tree, rest)
                if "did you mean" in line or "add it with" in line:
                    return line
                return line + _elsewhere(group, rest, [o for o in options[group] if o != option],
                                         folders)
            node = node[part]
    return None


def _elsewhere(group: str, rest: str, others: list[str], folders: list[Path]) -> str:
    """Where the group's other options have the setting meant: `data.image_size` is
    data=image_folder's."""
    having: dict[str, list[str]] = {}
    for option in others:
        tree = _option_tree(folders, group, option)
        for setting in _nearest(rest, _leaves(tree) if tree else []):
            having.setdefault(setting, []).append(option)
    return "".join(f"; {group}.{setting} is a setting of {group}={', '.join(those)}"
                   for setting, those in list(having.items())[:2])


def _nearest(rest: str, settings: list[str]) -> list[str]:
    """The setting nearest to `rest`, by its whole path or by its last name (`lr.gamma`:
    `lr.schedule.gamma`); none where nothing is near."""
    last = {s.rsplit(".", 1)[-1]: s for s in settings}
    return get_close_matches(rest, settings, n=1) or [
        last[m] for m in get_close_matches(rest.rsplit(".", 1)[-1], list(last), n=1)]


def _missing_key_line(key: str, group: str, option: str, tree: dict, rest: str) -> str:
    settings = _leaves(tree)
    added = _schema_fields(tree, rest, group)
    if rest in added:  # the schema knows it; this option leaves it at its default
        return (f"{key}: {group}={option} does not set {rest}; add it with +{key}=<value>"
                f"; {group}={option} sets: {', '.join(settings) or 'nothing'}")
    near = _nearest(rest, settings + added)
    hint = ""
    if near:
        hint = f" (did you mean {'+' if near[0] in added else ''}{group}.{near[0]}?)"
    return (f"{key}: no such setting in {group}={option}{hint}; {group}={option} has: "
            f"{', '.join(settings) or 'no settings'}")


def composition_error_line(exc: Exception) -> str:
    """Hydra's multi-line composition error (what is missing, the options there are, the search
    path) as one line, without the search path."""
    text = str(exc).split("Config search path", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].endswith(":"):  # "Available options in 'lr':" and a list
        return f"{lines[0]}; {lines[1][:-1].lower()}: {', '.join(lines[2:])}"
    return "; ".join(lines)


# --- train.py's flags: `-m` where argparse takes it, and a sweep written without it -----------

MULTIRUN = ("-m", "--multirun")
# Hydra's flags that take the next argument as their value
FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                    "--experimental-rerun", "--cfg", "-c", "--package", "-p", "--info", "-i"}


def _flags_and_overrides(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """(the flags with their values, the overrides, whether a flag stands between overrides):
    argparse takes the overrides as one run of words, so `a=1 -m b=2` is refused."""
    flags: list[str] = []
    overrides: list[str] = []
    flag_after_override = refused = False
    args = iter(argv)
    for arg in args:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in FLAGS_WITH_VALUE:
                value = next(args, None)
                if value is not None:
                    flags.append(value)
            flag_after_override = flag_after_override or bool(overrides)
        else:
            refused = refused or flag_after_override
            overrides.append(arg)
    return flags, overrides, refused


def sweep_flag_problem(argv: list[str], command: str = "python src/train.py") -> str | None:
    """`-m` after an override (argparse's usage block), a list of values without `-m` (Hydra's
    "Ambiguous value" block), a study's preset without `-m` (it would train its baseline alone),
    as one line with the command to type."""
    flags, overrides, refused = _flags_and_overrides(argv)
    fixed = " ".join([command, *flags, *overrides])
    bare = [o for o in overrides if "=" not in o and not o.startswith("~")]
    if bare:
        joined = " ".join(overrides)
        spaced = joined.replace(" = ", "=").replace(" =", "=").replace("= ", "=")
        if spaced != joined:
            return (f"{joined}: an override has no spaces around '=': "
                    f"{' '.join([command, *flags, spaced])}")
        return f"{bare[0]}: an override is key=value (e.g. {bare[0]}=...; ~{bare[0]} removes it)"
    if refused:
        late = next(f for f in flags if argv.index(f) > argv.index(overrides[0]))
        return f"{late} goes before the overrides: {fixed}"
    if any(f in MULTIRUN for f in flags):
        return None
    parser = OverridesParser.create()
    with_m = " ".join([command, "-m", *flags, *overrides])
    folders = [CONF, *(d for d in user_dirs(config_dir_args(argv)[1] + overrides) if d.is_dir())]
    for arg in overrides:
        try:
            override = parser.parse_override(arg)
        except HydraException:
            return None  # problem() says what the grammar refuses
        if override.is_sweep_override():
            key, _, typed = arg.partition("=")
            sweep = override.value()
            plain = isinstance(sweep, ChoiceSweep) and sweep.simple_form
            as_list = (f"; for one value that is a list write {key}=[{typed}]"
                       if plain and key not in groups(folders) else "")
            return f"{arg}: a list of values is a sweep: add -m to sweep them ({with_m}){as_list}"
        group = override.key_or_group.lstrip("+")
        chosen = override.value()
        path = _option_file(folders, group, chosen) if isinstance(chosen, str) else None
        if path is not None and _is_global(path):
            params = ((_load(path).get("hydra") or {}).get("sweeper") or {})
            if params.get("params") or params.get("n_trials"):
                return (f"{arg} is a sweep of several runs: add -m to run it ({with_m})")
    return None
