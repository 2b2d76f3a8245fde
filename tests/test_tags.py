"""The tag names runs carry (cifar_sweep/tracking/tags.py) never change: newer code reads the tags
that older code wrote (which config a finished run holds, which runs a sweep wrote ahead, who
owns a running one), so a renamed tag would turn every finished run into a stranger."""

from cifar_sweep.tracking import tags

# as written by every version so far (the reference runs' AHEAD tag since the bulk plan)
WRITTEN = {
    'GROUPS': ('model', 'optimizer', 'lr', 'loss', 'data', 'augment'),
    'ROLE': 'cifar_sweep.role',
    'ROLE_JOB': 'job',
    'ROLE_SWEEP': 'sweep',
    'ROLE_REFERENCE': 'reference',
    'SAME_AS': 'cifar_sweep.same_as',
    'PARENT': 'mlflow.parentRunId',
    'CONFIG_HASH': 'config_hash',
    'SETTING_HASH': 'setting_hash',
    'CODE_VERSION': 'code_version',
    'CODE_PART': 'code.',
    'TORCH_VERSION': 'torch_version',
    'PRECISION': 'precision',
    'DATA_FINGERPRINT': 'data_fingerprint',
    'STOP_REASON': 'stop_reason',
    'STOPPED_EARLY': 'early_stop',
    'REACHED_EPOCHS': 'epochs',
    'JOB_NUM': 'job.num',
    'JOB_OVERRIDES': 'job.overrides',
    'SWEEP_OVERRIDES': 'sweep.overrides',
    'SWEEP_JOBS': 'sweep.jobs',
    'SWEEP_VARYING': 'sweep.varying',
    'SWEEP_FIRST_JOB': 'sweep.first_job',
    'SWEEP_TO_TRAIN': 'sweep.to_train',
    'SWEEP_LAUNCHED': 'sweep.launched',
    'AHEAD': 'cifar_sweep.ahead',
    'PEAK_MEMORY': 'peak_memory',
    'PREDICTIONS': 'predictions',
    'FAILURE': 'failure_reason',
    'INTERRUPTED': 'interrupted',
    'OWNER_HOST': 'owner.host',
    'OWNER_PID': 'owner.pid',
    'OWNER_START': 'owner.start',
    'OWNER_SLURM_JOB': 'owner.slurm_job',
    'OWNER_SLURM_RESTART': 'owner.slurm_restart',
    'HEARTBEAT': 'heartbeat',
    'HEARTBEAT_TIMEOUT': 'heartbeat.timeout_s',
    'TRIAL': 'hpo.trial',
    'TRIAL_STATE': 'hpo.state',
    'HPO_STUDY': 'hpo.study',
    'HPO_STUDY_UID': 'hpo.study_uid',
    'HPO_STORAGE': 'hpo.storage',
    # literals elsewhere until the one tag builder (tracking/run_tags.py): the names runs carry
    'RUN_NAME': 'mlflow.runName',
    'USER': 'mlflow.user',
    'SOURCE_NAME': 'mlflow.source.name',
    'SOURCE_TYPE': 'mlflow.source.type',
    'SOURCE_COMMIT': 'mlflow.source.git.commit',
    'GIT_COMMIT': 'git_commit',
    'GIT_DIRTY': 'git_dirty',
    'DATA_CACHE': 'data_cache',
    'DEVICE': 'device',
    'NUM_THREADS': 'num_threads',
    'STUDY_NAME': 'study.name',
    'HPO_BEST_TRIAL': 'hpo.best_trial',
    'HPO_BEST': 'hpo.best.',
    'COMPARE_VIEW': 'cifar_sweep.compare_view',
    'SHARED_VIEW': 'mlflow.sharedViewState.',
    'EXPERIMENT_KIND': 'mlflow.experimentKind',
    'MODEL_TRAINING': 'custom_model_development',
}


def test_every_tag_name_is_the_one_runs_already_carry():
    current = {name: getattr(tags, name) for name in dir(tags) if name.isupper()}
    assert current == WRITTEN


def test_no_two_tags_share_a_name():
    names = [v for v in WRITTEN.values() if isinstance(v, str) and v not in (
        tags.ROLE_JOB, tags.ROLE_SWEEP, tags.ROLE_REFERENCE, tags.MODEL_TRAINING,
        tags.STOPPED_EARLY, tags.REACHED_EPOCHS)]
    assert len(names) == len(set(names))
