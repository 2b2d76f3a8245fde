"""A run's tags, built once (tracking/run_tags.py): a reference run carries every tag its job
would have written itself, so that tables and lookups read either alike; the only tags a job run
has and its reference lacks are the job's own (its threads, and what training wrote). The sets
below are what the three assemblies (the job, the sweep's bulk references, the sweep's parent)
wrote before the builder, read back from the store."""

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cifar_sweep.tracking import run_tags
from cifar_sweep.tracking import tags as t
from conftest import FAST, ROOT

# a job run's own: its torch threads (a reference, written by the sweep, has none), and what
# training wrote into it as it ended
JOBS_OWN = {t.NUM_THREADS, t.STOP_REASON, t.PEAK_MEMORY, t.PREDICTIONS}
# what a reference written ahead adds: the run it stands for, that the sweep wrote it, and (a
# job alone has none) the sweep it belongs to and its number there
REFERENCE_ADDS = {t.SAME_AS, t.AHEAD, t.PARENT, t.JOB_NUM}
# values that differ by who wrote the run: the process (its owner, heartbeat) and how it got its
# decoded data (the job from its own load, the sweep from its plan's)
WRITER = {t.ROLE, t.OWNER_HOST, t.OWNER_PID, t.OWNER_START, t.HEARTBEAT, t.HEARTBEAT_TIMEOUT,
          t.DATA_CACHE, t.RUN_NAME}


def _facts(**kw):
    return {"choices": {"model": "m", "optimizer": "sgd", "lr": "constant", "loss": "ce",
                        "data": "synthetic", "augment": "none"},
            "identity": {t.CONFIG_HASH: "c", t.SETTING_HASH: "s", t.CODE_VERSION: "v"},
            "fingerprint": "f", "data_cache": "decoded", "device": "cpu", "precision": "fp32",
            "overrides": ["lr.value=0.1"], "study": "", "git_commit": "abc-dirty",
            "owner": {t.OWNER_HOST: "h", t.OWNER_PID: "1"}, **kw}


def test_a_reference_carries_its_jobs_tags_but_its_threads():
    job = run_tags.job(**_facts(), parent="p", job_num=3, threads=2)
    ref = run_tags.reference(run_tags.job(**_facts(), parent="p", job_num=3), "orig", ahead=True)
    assert set(job) - set(ref) == {t.NUM_THREADS}
    assert set(ref) - set(job) == {t.SAME_AS, t.AHEAD}
    assert {k: v for k, v in ref.items() if k in job and k != t.ROLE} == {
        k: v for k, v in job.items() if k != t.NUM_THREADS and k != t.ROLE}
    assert (job[t.ROLE], ref[t.ROLE], ref[t.SAME_AS]) == ("job", "reference", "orig")
    # a job's own reference (it decided alone, in a sweep) keeps all its tags, threads included
    assert set(run_tags.reference(job, "orig")) - set(job) == {t.SAME_AS}


def test_the_values_are_the_ones_finished_runs_are_read_by():
    job = run_tags.job(**_facts(), parent="p", job_num=3, threads=2, trial=7,
                       trial_tags={t.HPO_STUDY: "st"})
    assert job[t.SOURCE_NAME] == "src/train.py" and job[t.GIT_COMMIT] == "abc-dirty"
    assert (job[t.SOURCE_TYPE], job[t.GIT_DIRTY], job[t.SOURCE_COMMIT]) == ("LOCAL", "true", "abc")
    assert (job[t.TRIAL], job[t.HPO_STUDY], job[t.JOB_NUM], job[t.PARENT]) == ("7", "st", "3", "p")
    assert job["augment"] == "none" and job[t.JOB_OVERRIDES] == "lr.value=0.1"
    alone = run_tags.job(**{**_facts(), "choices": {}, "git_commit": "unknown"})
    assert alone["model"] == "None" and t.SOURCE_COMMIT not in alone
    assert not {t.PARENT, t.JOB_NUM, t.NUM_THREADS, t.TRIAL} & set(alone)
    # a sweep's parent shares the commit, the entry point, the source tags and the owner
    parent = run_tags.common("abc-dirty", {t.OWNER_HOST: "h"})
    assert parent == {t.GIT_COMMIT: "abc-dirty", t.SOURCE_NAME: "src/train.py", t.OWNER_HOST: "h",
                      t.SOURCE_TYPE: "LOCAL", t.GIT_DIRTY: "true", t.SOURCE_COMMIT: "abc"}
    assert {k: job[k] for k in parent if k != t.OWNER_HOST} == {
        k: v for k, v in parent.items() if k != t.OWNER_HOST}


def test_a_reference_written_ahead_carries_what_its_job_wrote(project, monkeypatch):
    """One job trained, then a sweep's plan of the same job finds it finished and writes its
    reference run in bulk (plan/bulk_plan.py), as a sweep run again does: the reference carries every
    tag of the job run but the job's own, with the same values."""
    from cifar_sweep.config.override_check import composition_error_line
    from cifar_sweep.plan import bulk_plan
    from cifar_sweep.tracking import lifecycle
    from cifar_sweep.tracking.experiments import open_experiment
    from cifar_sweep.tracking.runs import git_commit

    overrides = ["lr.value=0.02", "tracking.figures=false", "tracking.log_model=false",
                 f"tracking.uri={project.store}"]
    project.job(*overrides, check=True)
    [job] = project.runs()
    monkeypatch.chdir(project.workdir)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        plan = bulk_plan.plan(lambda groups: compose("config", overrides=groups,
                                                 return_hydra_config=True),
                          loader, [[*FAST, *overrides]], composition_error_line)
        cfg = compose("config", overrides=[*FAST, *overrides])
    client, experiment_id = open_experiment(cfg.tracking)
    plan.decide(client, experiment_id)
    parent = client.create_run(experiment_id, tags={t.ROLE: t.ROLE_SWEEP}).info.run_id
    assert plan.write_references(client, experiment_id, parent, ["lr.value"],
                                 lifecycle.owner_tags(), git_commit()) == 1
    [ref] = [r for r in project.runs() if r.data.tags.get(t.ROLE) == t.ROLE_REFERENCE]
    job_tags, ref_tags = job.data.tags, ref.data.tags
    assert set(job_tags) - set(ref_tags) == JOBS_OWN
    assert set(ref_tags) - set(job_tags) == REFERENCE_ADDS
    assert {k: v for k, v in ref_tags.items() if k in job_tags and k not in WRITER} == {
        k: v for k, v in job_tags.items() if k not in JOBS_OWN | WRITER}
    assert (ref_tags[t.SAME_AS], ref_tags[t.PARENT], ref_tags[t.JOB_NUM], ref_tags[t.AHEAD]) == (
        job.info.run_id, parent, "0", "true")
