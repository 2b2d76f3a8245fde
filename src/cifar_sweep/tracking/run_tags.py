"""A run's tags, built from its facts in one place: a job's run, a reference run standing for a
job (it carries what the job would have written itself), and what a sweep's parent shares with
its jobs. The names are tags.py's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cifar_sweep.tracking import tags as t

ENTRY_POINT = "src/train.py"  # the mlflow.source.name of every run: the UI's Source column


def common(git_commit: str, owner: Mapping[str, str]) -> dict[str, str]:
    """What a sweep's parent and its jobs all carry: the commit, the entry point, MLflow's source
    tags (the UI's Source column, the sweep's row too) and the owner (`lifecycle.owner_tags()`:
    the process writing the run, and its heartbeat)."""
    return {t.GIT_COMMIT: git_commit, t.SOURCE_NAME: ENTRY_POINT, **source(git_commit), **owner}


def source(git_commit: str) -> dict[str, str]:
    """MLflow's own source tags, from `runs.git_commit()`'s answer (`<sha>[-dirty]`), so the
    UI's Source column shows the entry point and the commit; `git_dirty` says whether the tree
    differed from that commit."""
    tags = {t.SOURCE_TYPE: "LOCAL", t.GIT_DIRTY: str(git_commit.endswith("-dirty")).lower()}
    if git_commit != "unknown":
        tags[t.SOURCE_COMMIT] = git_commit.removesuffix("-dirty")
    return tags


def job(*, choices: Mapping[str, object], identity: Mapping[str, str], fingerprint: str,
        data_cache: str, device: str, precision: str, overrides: Sequence[str], study: str,
        git_commit: str, owner: Mapping[str, str], parent: str | None = None, job_num: int = 0,
        threads: int | None = None, trial: int | None = None,
        trial_tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """A job's run: its config's choice of each group, its identity (`Identity.tags()`: the
    hashes a finished run is found by), its data, device and precision, its overrides, study,
    commit and owner; in a sweep its parent and number; in a search its trial and study. A
    reference run has no threads of its own (`threads` None leaves the tag out)."""
    tags = {**{g: str(choices.get(g)) for g in t.GROUPS}, **common(git_commit, owner),
            t.ROLE: t.ROLE_JOB, t.DATA_FINGERPRINT: fingerprint,
            t.DATA_CACHE: data_cache, t.DEVICE: device, t.PRECISION: precision,
            t.JOB_OVERRIDES: " ".join(overrides), t.STUDY_NAME: study, **identity}
    if threads is not None:
        tags[t.NUM_THREADS] = str(threads)
    if trial is not None:  # which trial of which study: studies share experiments
        tags[t.TRIAL] = str(trial)
        tags.update(trial_tags or {})
    if parent:
        tags[t.PARENT] = parent
        tags[t.JOB_NUM] = str(job_num)
    return tags


def reference(job_tags: Mapping[str, str], same_as: str, ahead: bool = False) -> dict[str, str]:
    """A reference run: the job's tags, its role reference and the run it stands for; `ahead`:
    written by the sweep before it launched its jobs (`plan/bulk_plan.py`), not by the job."""
    tags = {**job_tags, t.ROLE: t.ROLE_REFERENCE, t.SAME_AS: same_as}
    if ahead:
        tags[t.AHEAD] = "true"
    return tags
