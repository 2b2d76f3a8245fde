"""`src/tune.py` (`make ablation-<study>` for a study with `study.tune`): a fair ablation. Each arm
(each value of the study's varying setting) is searched with the same budget (trials, sampler,
seed, epochs), choosing by validation accuracy alone (its trials never evaluate the test set);
each arm's best is then trained anew over the study's seeds, all arms in one sweep; then the
table, from MLflow (docs/tuned.md).

Each arm's search is an `hpo=`-style Optuna sweep (its trials side by side, resumed, on any
launcher), named after the study, the arm and every setting it runs with, so that another data
set or budget is another search. Its best (read back from MLflow: report/tuning.py) becomes a
generated config option, `+tuned_<axis>=<arm>` in `hpo/tuned/<study>/`, which the seed sweep
selects: a finished seed run is skipped as any sweep's, so the same command again trains nothing
and more trials retrain an arm's seeds only where its best changed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

DEFAULT_STORAGE = "sqlite:///hpo/tuned.db"  # relative: to where the command runs, as hpo='s
ARMS_DIR = Path("hpo/tuned")                # the generated arms' config folders, per study


def _train(scripts: Path, *overrides: str) -> int:
    return subprocess.run([sys.executable, str(scripts / "train.py"), "-m", *overrides]).returncode


def override_value(value: Any) -> str:
    """A value in Hydra's override grammar: `{lr.value:{type:float,low:1e-05}}`."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if text.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Protocol:
    """A tuned study's command, settled before anything runs."""

    name: str
    axis: str
    arms: list[str]
    baseline_arm: str | None
    space: dict[str, dict]
    trials: int
    epochs: int
    pruner: dict
    seed: int
    seeds: list[str]
    storage: str
    fixed: list[str]          # the user's other overrides (data, tracking, launcher, ...)
    digest: str               # the settings every arm's search runs with
    tracking: DictConfig

    def search(self, arm: str) -> str:
        """An arm's search: the Optuna study's name and the `hpo.study` tag of its trials."""
        return f"{self.name}:{arm}:{self.digest}"

    def _kept(self, *mine: str) -> list[str]:
        """The user's overrides but those of `mine` and the arms' (which the phase sets)."""
        return [o for o in self.fixed if o.partition("=")[0].lstrip("+~") not in (*mine, self.axis)]

    def trial_overrides(self, arm: str) -> list[str]:
        return [f"ablation={self.name}", "hydra.sweeper.params=null",
                "hydra/sweeper=optuna_study",
                f"hydra.sweeper.study_name={override_value(self.search(arm))}",
                f"hydra.sweeper.storage={override_value(self.storage)}",
                f"hydra.sweeper.n_trials={self.trials}", f"hydra.sweeper.seed={self.seed}",
                f"++hydra.sweeper.space={override_value(self.space)}",
                f"++hydra.sweeper.pruner={override_value(self.pruner)}",
                f"{self.axis}={override_value(arm)}", f"trainer.seed={self.seed}",
                f"trainer.epochs={self.epochs}", "++trainer.skip_test=true",
                f"++study.tune.arm={override_value(arm)}",
                f"++study.tune.search={override_value(self.search(arm))}",
                "tracking.figures=false", "tracking.log_model=false",
                *self._kept("trainer.seed", "trainer.epochs")]

    def seed_overrides(self, arms_dir: Path) -> list[str]:
        """The seed sweep's command line: the arms' generated options by `--config-dir` (a
        folder Hydra searches from its start, so that the sweep's planner finds the group; a
        user's own folder stays the `hydra.searchpath` override it came as)."""
        from cifar_sweep.report.tuning import arm_group

        group = arm_group(self.axis)
        base = ([f"study.baseline={override_value(f'+{group}={self.baseline_arm}')}"]
                if self.baseline_arm else [])
        return ["--config-dir", str(arms_dir.resolve()), f"ablation={self.name}",
                "hydra.sweeper.params=null",
                f"+{group}={','.join(override_value(a) for a in self.arms)}",
                f"trainer.seed={','.join(self.seeds)}", f"++study.tune.epochs={self.epochs}",
                *base, *self._kept("trainer.seed")]


def _sweep_values(override) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def settle(name: str, overrides: list[str]) -> Protocol:
    """The protocol from the preset and the command line. Raises UserInputError (one line)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report import presets
    from cifar_sweep.search import optuna_study

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise UserInputError(f"{' '.join(overrides)} is invalid: {str(exc).splitlines()[0]}") \
            from None
    swept = {o.get_key_element(): _sweep_values(o) for o in parsed}
    fixed = [text for text, o in zip(overrides, parsed) if not o.is_sweep_override()]
    from hydra.errors import HydraException

    from cifar_sweep.config import override_check

    line = override_check.problem([f"ablation={name}", *overrides])
    if line:  # a misspelt key or option, as train.py says it
        raise UserInputError(line)
    try:
        preset = presets.compose_preset("ablation", name, [
            o for o, p in zip(overrides, parsed) if not p.is_sweep_override()
            and p.get_key_element() != "trainer.seed"])
    except HydraException as exc:
        raise UserInputError(override_check.composition_error_line(exc)) from None
    tune = preset.study.get("tune")
    if not tune:
        raise UserInputError(f"ablation={name} has no study.tune: it is not a tuned study "
                             "(docs/tuned.md says how to declare one)")
    params = dict(preset.hydra.sweeper.get("params") or {})
    if len(params) != 1:
        raise UserInputError(f"ablation={name} varies {', '.join(params) or 'nothing'}: a tuned "
                             "study varies one setting (its arms) in hydra.sweeper.params")
    axis, arm_text = next(iter(params.items()))
    arms = swept.get(axis) or _sweep_values(
        OverridesParser.create().parse_overrides([f"{axis}={arm_text}"])[0])
    others = [k for k, o in zip(swept, parsed) if o.is_sweep_override()
              and k not in (axis, "trainer.seed")]
    if others:
        raise UserInputError(f"{others[0]}={','.join(swept[others[0]])} is invalid here: a tuned "
                             f"study sweeps its arms ({axis}) and seeds (trainer.seed) only")
    plain = cast(dict, OmegaConf.to_container(tune, resolve=True))
    space = plain.get("space") or {}
    trials, seed = plain.get("trials", 20), plain.get("seed", 1000)
    try:
        if not space:
            raise UserInputError("hydra.sweeper.space is empty: give study.tune.space at least "
                                 "one key, e.g. {lr.value: {type: float, low: 1e-4, high: 0.3, "
                                 "log: true}}")
        optuna_study.distributions(space)
        pruner = plain.get("pruner") or {"kind": "median"}
        optuna_study.make_pruner(pruner)
    except UserInputError as exc:
        raise UserInputError(str(exc).replace("hydra.sweeper.", "study.tune.")) from None
    if not (isinstance(trials, int) and trials >= 1):
        raise UserInputError(f"study.tune.trials={trials} is invalid: allowed: an integer >= 1")
    epochs = plain.get("epochs") or int(preset.trainer.epochs)
    if not (isinstance(epochs, int) and epochs >= 1):
        raise UserInputError(f"study.tune.epochs={epochs} is invalid: allowed: an integer >= 1, "
                             "or null (the study's trainer.epochs)")
    seeds = swept.get("trainer.seed") or [str(preset.trainer.seed)]
    if str(seed) in seeds:
        raise UserInputError(f"study.tune.seed={seed} is invalid: it is one of the study's seeds "
                             f"({','.join(seeds)}); a trial's seed must not be a seed of the runs "
                             "it chooses for")
    base_key, _, base_arm = str(preset.study.baseline or "").partition("=")
    return Protocol(name, axis, arms, base_arm if base_key == axis else None, space, trials,
                    epochs, pruner, seed, seeds,
                    str(plain.get("storage") or DEFAULT_STORAGE), fixed,
                    _digest(preset, space, epochs, seed, pruner), preset.tracking)


def _digest(preset: DictConfig, space: dict, epochs: int, seed: int, pruner: dict) -> str:
    """12 hex digits of the settings an arm's search runs with: the config that decides a result
    (the data's folder too) but the arm, the tuned keys, the seed and the epochs, which the
    search sets; and the search's own settings but its number of trials, which may grow."""
    from cifar_sweep.plan.identity import result_tree

    body = OmegaConf.masked_copy(preset, [str(k) for k in preset if k != "hydra"])
    tree = result_tree(cast(dict, OmegaConf.to_container(body, resolve=True)), "", "", "")
    for key in [*space, "trainer.seed", "trainer.epochs"]:
        node: Any = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    settings = {"config": tree, "data.root": str(preset.data.get("root")), "space": space,
                "epochs": epochs, "seed": seed, "pruner": pruner}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def search_done(protocol: Protocol, arm: str) -> bool:
    """Whether an arm's search has its trials, none in flight (from the Optuna storage; where
    it is gone, the search runs again: its trials' finished runs are reused, not trained)."""
    import optuna

    from cifar_sweep.search import workers
    from cifar_sweep.tracking.store import sqlite_file

    db = sqlite_file(protocol.storage)
    if db is not None and not db.is_file():
        return False
    try:
        study = optuna.load_study(study_name=protocol.search(arm),
                                  storage=workers.open_storage(protocol.storage))
    except KeyError:  # no such study yet
        return False
    return (workers.trials_ended(study) >= protocol.trials and workers.running(study) == 0)


def arm_config(protocol: Protocol, arm: str, best, search_name: str, edges: list[str]) -> str:
    """The generated option `+tuned_<axis>=<arm>`: the arm and its best values, and in
    `study.tune` (outside a run's identity) what the table says of them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cifar_sweep.config.config_dirs import CONF
    from cifar_sweep.report.tuning import space_text, values_text

    parser = OverridesParser.create()
    defaults: list[str] = []
    body: dict[str, Any] = {}

    def group(key: str) -> bool:
        return "." not in key and (CONF / key.lstrip("+")).is_dir()

    def put(key: str, text: str) -> None:
        value = parser.parse_override(f"{key}={text}").value()
        if group(key):
            plain = key.lstrip("+")
            defaults.append(f"/{plain}: {value}" if key.startswith("+")
                            else f"override /{plain}: {value}")
            return
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    put(protocol.axis, arm)
    for key, text in best.values.items():
        put(key, text)
    node = body.setdefault("study", {}).setdefault("tune", {})
    node.update({"arm": arm, "search": search_name, "tuned": values_text(best.values),
                 "best_trial": best.number, "space_text": space_text(protocol.space),
                 "edges": " | ".join(edges) or None})
    head = ["# @package _global_",
            f"# Written by src/tune.py: arm {arm} of study {protocol.name} at the best trial "
            f"({best.number}, validation accuracy {best.value:.4f}) of search {search_name}.",
            "# Each run again writes it anew."]
    if defaults:
        head += ["defaults:", *[f"  - {d}" for d in defaults]]
    return "\n".join(head) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def main(argv: list[str], scripts: Path) -> int:
    """`scripts`: the folder of train.py and report.py, which each phase runs."""
    from cifar_sweep.config import config_dirs
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report import presets, tuning
    from cifar_sweep.tracking.experiments import open_store

    argv, search_path = config_dirs.config_dir_args(argv)  # --config-dir DIR: a user's presets too
    argv += search_path
    studies = [a.split("=", 1)[1] for a in argv if a.startswith("ablation=")]
    overrides = [a for a in argv if not a.startswith("ablation=")]
    if len(studies) != 1 or studies[0] not in presets.studies(argv):
        print(f"error: ablation={'/'.join(studies) or '(none)'} is invalid: allowed: one of "
              f"{', '.join(presets.studies(argv))}", file=sys.stderr)
        return 2
    try:
        protocol = settle(studies[0], overrides)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    p = protocol
    print(f"tuned study {p.name}: {len(p.arms)} arms ({', '.join(p.arms)}) x {p.trials} trials "
          f"x {p.epochs} epochs on validation, then each arm's best x {len(p.seeds)} seeds",
          flush=True)
    for arm in p.arms:  # a: each arm's search
        if search_done(p, arm):
            print(f"tune {arm}: its {p.trials} trials are done (search {p.search(arm)})",
                  flush=True)
            continue
        print(f"tune {arm}: search {p.search(arm)}, {p.trials} trials", flush=True)
        status = _train(scripts, *p.trial_overrides(arm))
        if status != 0:
            return status
    client = open_store(p.tracking)
    arms_dir = ARMS_DIR / p.name
    folder = arms_dir / tuning.arm_group(p.axis)
    folder.mkdir(parents=True, exist_ok=True)
    for arm in p.arms:  # each arm's best, from MLflow
        search = tuning.read_search(client, str(p.tracking.experiment), p.search(arm),
                                    list(p.space))
        best = search.best
        if best is None:
            print(f"error: tune {arm}: none of its {search.spent} trials finished (search "
                  f"{p.search(arm)}): no configuration to train over the seeds", file=sys.stderr)
            return 1
        edges = [line for key, text in best.values.items() if key in p.space
                 and p.space[key].get("type", "float") != "categorical"
                 for line in [tuning.edge_line(arm, key, float(text), p.space[key])] if line]
        print(f"tune {arm}: best of {search.spent} trials: {tuning.values_text(best.values)} "
              f"(validation accuracy {best.value:.4f}, trial {best.number})", flush=True)
        for line in edges:
            print(f"warning: {line}", flush=True)
        (folder / f"{arm}.yaml").write_text(arm_config(p, arm, best, p.search(arm), edges))
    status = _train(scripts, *p.seed_overrides(arms_dir))  # b: each arm's best over the seeds
    store = [o for o in p.fixed if o.startswith(("tracking.", config_dirs.SEARCH_PATH))]
    report = subprocess.run([sys.executable, str(scripts / "report.py"), f"ablation={p.name}",
                             *store]).returncode  # c: the table, from MLflow
    return status or report
