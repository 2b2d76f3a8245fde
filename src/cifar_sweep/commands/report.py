"""`src/report.py` (`make tables`): which tables its arguments ask for (a preset study, a sweep,
an experiment's newest sweep, a search, the model tables, all of them), each written from the
store, without training and without writing to the store: to a user's folder `results/<study or
experiment>/<sweep's start>_<id>/`, or with `published` (`make tables` alone) the project's
published `reports/<study>/` (`report/folders.py`)."""


from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cifar_sweep.config.config_dirs import config_dir_args
from cifar_sweep.report.presets import SEARCHES, by_experiment, compose_preset, studies
from cifar_sweep.report.presets import study as preset_study

if TYPE_CHECKING:  # mlflow is imported only where a table is made: a bad argument says so at once
    from mlflow.tracking import MlflowClient

OPTIONS = ("sweep", "experiment", "baseline", "where")
COLUMNS = "report.columns"  # table.tex's columns (report/paper_table.py): a report's setting only
PUBLISHED = "published"     # `make tables` alone: the project's reports/, not the user's results/


def _sweep_study(client, options: dict, overrides: list[str]):
    """A study for `sweep=` / `experiment=`: a preset's where the experiment is one's."""
    from mlflow.exceptions import MlflowException

    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report.studies import TableSpec
    from cifar_sweep.tracking import tags as t
    from cifar_sweep.tracking.paging import all_experiments

    sweep, experiment = options.get("sweep"), options.get("experiment")
    if sweep and sweep != "latest":
        try:
            run = client.get_run(sweep)
        except MlflowException:
            raise BadArgument(f"sweep={sweep}: no such run in the store"
                              + nearest_name(client, "sweep", sweep)) from None
        if run.data.tags.get(t.ROLE) != t.ROLE_SWEEP:
            raise UserInputError(f"sweep={sweep}: this run is not a sweep's parent run")
        experiment = client.get_experiment(run.info.experiment_id).name
    elif experiment is None:  # sweep=latest: the newest sweep of the whole store
        newest = client.search_runs(
            [e.experiment_id for e in all_experiments(client)],
            f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'", order_by=["attributes.start_time DESC"],
            max_results=1)
        if not newest:
            raise UserInputError("sweep=latest: the store holds no sweep; run one with "
                                 "`python src/train.py -m ...` first")
        experiment = client.get_experiment(newest[0].info.experiment_id).name
    elif client.get_experiment_by_name(experiment) is None:
        raise BadArgument(f"experiment={experiment}: no such experiment in the store"
                          + nearest_name(client, "experiment", experiment))
    preset = by_experiment(overrides).get(experiment)
    if preset is not None:
        study = preset_study(preset, overrides, options.get("baseline"),
                             None if sweep == "latest" else sweep, options["where"])
        return study, preset
    # the folder is the sweep's own, known once the table has chosen it: see folders.py
    return TableSpec(name=experiment, experiment=experiment, baseline=options.get("baseline"),
                 sweep=None if sweep == "latest" else sweep, where=options["where"], kind="Sweep",
                 hint="; run a sweep with `python src/train.py -m ...` first"), None


def _experiments_with_sweeps(client) -> list[str]:
    from cifar_sweep.tracking import tags as t
    from cifar_sweep.tracking.paging import all_experiments

    out = []
    for exp in all_experiments(client):
        sweeps = client.search_runs([exp.experiment_id], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                                    max_results=1)
        trials = client.search_runs([exp.experiment_id], f"tags.`{t.TRIAL}` != ''", max_results=1)
        if sweeps and not trials:
            out.append(exp.name)
    return out


def parse(argv: list[str]):
    """(words, targets [(group, name)], options, store overrides) or an error line."""
    words = [a for a in argv if "=" not in a]
    targets = [(a.split("=", 1)[0], a.split("=", 1)[1]) for a in argv
               if a.startswith(("ablation=", "hpo="))]
    options: dict[str, Any] = {"where": {}}
    overrides: list[str] = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "where":
            k, eq, v = value.partition("=")
            if not eq:
                return f"where={value} is invalid: allowed: where=<key>=<value>"
            options["where"][k] = v
        elif key in OPTIONS:
            options[key] = value
        elif key == COLUMNS:
            names = tuple(n.strip() for n in value.split(",") if n.strip())
            if not names:
                return (f"{COLUMNS}={value} is invalid: allowed: {COLUMNS}=<name>,<name>,... "
                        "(accuracy, delta, p_holm, report, f1, ...; docs/reproducing.md)")
            options["columns"] = names
        elif "=" in arg and not arg.startswith(("ablation=", "hpo=")):
            overrides.append(arg)
    known = {"ablation": studies(overrides), "hpo": SEARCHES}
    unknown = ([w for w in words if w not in ("models", "all", PUBLISHED)]
               + [f"{g}={n}" for g, n in targets if n not in known[g]])
    if unknown or not (words or targets or "sweep" in options or "experiment" in options):
        return (f"report target {' '.join(unknown) or '(none)'} is unknown; allowed: "
                f"ablation=<{'|'.join(known['ablation'])}>, hpo=<{'|'.join(SEARCHES)}>, sweep=<latest|run "
                "id>, experiment=<name>, models, all")
    return words, targets, options, overrides


class BadArgument(Exception):
    """An argument that names nothing in the store (a sweep, an experiment, a baseline row): one
    line, exit 2, nothing written."""


def syntax_problem(options: dict, overrides: list[str],
                   targets: Sequence[tuple[str, str]] = ()) -> str | None:
    """What is wrong with the arguments' form, before the store is opened: an empty sweep= or
    experiment=, a baseline= that is no override, an override the config does not have (as
    train.py says it, with each preset named: a search's `hydra.sweeper.study_name=` is a
    setting of the search's sweeper, not of the default one)."""
    from cifar_sweep.config.override_check import problem

    for key in ("sweep", "experiment"):
        if key in options and not options[key]:
            allowed = "latest or a sweep's run id" if key == "sweep" else "an experiment's name"
            return f"{key}= is empty; allowed: {allowed}"
    baseline = options.get("baseline")
    if baseline is not None and "=" not in baseline.strip("="):
        return (f"baseline={baseline} is invalid: allowed: baseline=<key>=<value>, the override "
                "of the row the others are compared with (e.g. baseline=optimizer=adam)")
    for group, name in targets:
        found = problem([f"{group}={name}", *overrides])
        if found:
            return found
    return None if targets else problem(overrides)


def missing_store(tracking) -> str | None:
    """A local store folder that holds no store: a report only reads, so it makes none."""
    from pathlib import Path

    from cifar_sweep.tracking.store import sqlite_file

    uri = str(tracking.uri)
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        return f"tracking.uri={uri}: no store there ({db} does not exist)"
    if "://" in uri:
        return None
    folder = Path(uri).expanduser()
    if (folder / "mlflow.db").is_file():
        return None
    from cifar_sweep.report.folders import PUBLISHED_STORE

    if folder == PUBLISHED_STORE:
        return (f"no published store yet ({PUBLISHED_STORE}/): `make publish-store STORE=<your "
                "store>` makes it from the studies' runs; `make tables ARGS='tracking.uri=<your "
                "store>'` tables a store of yours into results/")
    return (f"tracking.uri={uri}: no store there (no {folder / 'mlflow.db'}); give the folder "
            "your runs were logged to (the same tracking.uri as train.py's)")


def baseline_problem(table, baseline: str | None) -> str | None:
    """A baseline= given on the command line that matches no row of the table: the rows it may
    name, the nearest first."""
    from difflib import get_close_matches

    if not baseline or table.selection.baseline is not None:
        return None
    rows = [" ".join(f"{k}={v}" for k, v in r.overrides.items()) or r.label
            for r in table.selection.rows]
    single = [f"{k}={v}" for r in table.selection.rows for k, v in r.overrides.items()]
    near = get_close_matches(baseline, single + rows, n=1)
    return (f"baseline={baseline} matches no row of this table"
            + (f" (did you mean baseline={near[0]}?)" if near else "")
            + f"; its rows: {', '.join(rows)}")


def nearest_name(client, key: str, value: str) -> str:
    """` (did you mean sweep=latest?)` for a sweep= or experiment= that names nothing: the
    nearest of the store's experiments with a sweep, or of `latest` and its sweeps' ids."""
    from difflib import get_close_matches

    from cifar_sweep.tracking import tags as t
    from cifar_sweep.tracking.paging import all_experiments

    try:
        experiments = [e for e in all_experiments(client) if e.lifecycle_stage == "active"]
        if key == "experiment":
            names = [e.name for e in experiments]
        else:
            names = ["latest"] + [r.info.run_id for r in client.search_runs(
                [e.experiment_id for e in experiments], f"tags.`{t.ROLE}` = '{t.ROLE_SWEEP}'",
                max_results=1000)]
    except Exception:  # a suggestion is a help: never an error of its own
        return ""
    near = get_close_matches(value, names, n=1, cutoff=0.5)
    if not near and key == "sweep":  # an id cut short: the sweeps it begins
        near = [n for n in names if n.startswith(value)][:1]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return (f" (did you mean {key}={near[0]}?)" if near else "") + (
        f"; the store's {'experiments' if key == 'experiment' else 'sweeps'}: {shown}"
        if names and key == "experiment" else "")


def main(argv: list[str]) -> int:
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.report.studies import build_table
    from cifar_sweep.search.trials_table import trials_report
    from cifar_sweep.tracking.experiments import open_store

    argv, search_path = config_dir_args(argv)  # --config-dir DIR: a user's presets too
    parsed = parse(argv + search_path)
    if isinstance(parsed, str):
        print(f"error: {parsed}", file=sys.stderr)
        return 2
    words, targets, options, overrides = parsed
    problem = syntax_problem(options, overrides, targets)  # before the store is opened
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from cifar_sweep.report import folders
    from cifar_sweep.report.paper_table import DEFAULT
    from cifar_sweep.report.studies import WIDE

    # published: only `make tables` alone, on the project's own store and presets
    out = folders.PUBLISHED if PUBLISHED in words else folders.USER
    if PUBLISHED in words and not any(o.startswith("tracking.uri=") for o in overrides):
        # the published tables come from the published store alone, whatever mlruns/ holds
        overrides = [*overrides, f"tracking.uri={folders.PUBLISHED_STORE}"]
    columns = options.get("columns", DEFAULT)
    if "models" in words or "all" in words:
        from cifar_sweep.report.model_tables import models_report  # torchvision's models: only here

        out.mkdir(exist_ok=True)
        (out / "models.md").write_text(models_report())
        print(f"wrote {out / 'models.md'}")
    every = "all" in words
    failed = False
    try:
        client: MlflowClient | None = None
        figures = True
        if targets or every or "sweep" in options or "experiment" in options:
            tracking = compose_preset("ablation", studies()[0], overrides).tracking
            if missing_store(tracking):
                raise BadArgument(missing_store(tracking))
            client, figures = open_store(tracking), bool(tracking.figures)
        jobs: list[tuple[str, Any]] = []  # (kind, preset name or sweep options) to tabulate
        if every:
            presets = by_experiment(overrides)
            targets = ([("ablation", s) for s in studies(overrides)]
                       + [("hpo", s) for s in SEARCHES])
            jobs += [("sweep", {**options, "experiment": e})
                     for e in _experiments_with_sweeps(client) if e not in presets]
        jobs = [(g, n) for g, n in targets] + jobs
        if "sweep" in options or "experiment" in options:
            jobs.append(("sweep", options))
    except (UserInputError, BadArgument) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BadArgument) else 1
    tables: dict[str, Any] = {}  # preset -> its table: `all` reads the report's claims on them
    for group, what in jobs:
        assert client is not None  # opened above for any table
        try:
            if group == "ablation":
                study = preset_study(what, overrides, options.get("baseline"),
                                     options.get("sweep"), options["where"])
                table = build_table(client, study)
                if baseline_problem(table, options.get("baseline")):
                    raise BadArgument(baseline_problem(table, options.get("baseline")))
                tables[what] = table
                folder = (out / what if out == folders.PUBLISHED else folders.user_folder(
                    client, what, table.selection.reference_sweep))
                md = table.write(folder, client, figures, columns)
            elif group == "sweep":
                study, preset = _sweep_study(client, what, overrides)
                table = build_table(client, study)
                if baseline_problem(table, what.get("baseline")):
                    raise BadArgument(baseline_problem(table, what.get("baseline")))
                folder = (out / preset if preset and out == folders.PUBLISHED
                          else folders.user_folder(client, preset or study.experiment,
                                                   table.selection.reference_sweep))
                md = table.write(folder, client, figures, columns)
            else:
                cfg = compose_preset("hpo", what, overrides)
                folder = out / str(cfg.tracking.experiment)  # a search: its own folder
                md = trials_report(client, str(cfg.tracking.experiment),
                                   str(cfg.hydra.sweeper.study_name),
                                   list(cfg.hydra.sweeper.space), str(cfg.hydra.sweeper.metric),
                                   folder)
        except BadArgument as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except UserInputError as exc:
            if str(exc).startswith(COLUMNS):  # a bad column name: the user's input
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"{'note' if every else 'error'}: {exc}", file=sys.stderr)
            failed = failed or not every
            continue
        if folder.parent.parent == folders.USER:  # a folder per sweep: LATEST and index.md
            folders.index_sweeps(folder.parent)
        print(md)
        print(f"wrote {folder}/")
        if WIDE in ((folder / "table.tex").read_text() if (folder / "table.tex").is_file() else ""):
            print(f"note: {folder}/table.tex is a table* (both columns of a two-column paper): "
                  f"its columns do not fit one; fewer with {COLUMNS}=... (notes.md)")
    if every and client is not None:  # the report's claims, across the studies' tables
        from cifar_sweep.report import claims

        out.mkdir(exist_ok=True)
        (out / "claims.md").write_text(claims.markdown(claims.read_tables(client, tables)))
        print(f"wrote {out / 'claims.md'}")
    return 1 if failed else 0
