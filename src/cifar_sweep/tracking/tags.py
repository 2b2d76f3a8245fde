"""The tag names every run carries, written by the jobs and the sweep and read back by the
lifecycle checks, the plan and the tables: the one list (a finished run's tags are read by
newer code, so a name here never changes)."""

GROUPS = ("model", "optimizer", "lr", "loss", "data", "augment")  # each a tag of every job

# Tag names, written here and read back by the sweep, the lifecycle checks and the report.
ROLE = "cifar_sweep.role"       # what a run is: one of the three below
ROLE_JOB = "job"                # a trained (or training) job
ROLE_SWEEP = "sweep"            # a sweep's parent run
ROLE_REFERENCE = "reference"    # a job of a sweep whose config had already finished: see SAME_AS
SAME_AS = "cifar_sweep.same_as"  # on a reference run: the id of the finished run it stands for
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"     # MLflow's own: the run's name,
USER = "mlflow.user"            # and who made it (bulk_writes.py writes both itself)
SOURCE_NAME = "mlflow.source.name"        # MLflow's own source tags: the UI's Source column
SOURCE_TYPE = "mlflow.source.type"
SOURCE_COMMIT = "mlflow.source.git.commit"
GIT_COMMIT = "git_commit"       # the checkout's commit, `-dirty` appended when it differed
GIT_DIRTY = "git_dirty"         # true when the tree had uncommitted changes to tracked files
CONFIG_HASH = "config_hash"
SETTING_HASH = "setting_hash"    # the config hash without the seed: a table's row
CODE_VERSION = "code_version"    # the hash of the code parts below (code_version.py)
CODE_PART = "code."              # prefix: code.model, code.training, ... one hash per part
TORCH_VERSION = "torch_version"
PRECISION = "precision"          # what trainer.precision resolved to: fp32, bf16, fp16
DATA_FINGERPRINT = "data_fingerprint"
DATA_CACHE = "data_cache"       # how the job got its decoded data (data/cache.py)
DEVICE = "device"               # the job's torch device: cpu, cuda, cuda:1
NUM_THREADS = "num_threads"     # the job's torch threads
STUDY_NAME = "study.name"       # the config's study.name (a preset study's), or empty
STOP_REASON = "stop_reason"      # why training ended: one of the two below
STOPPED_EARLY = "early_stop"     # trainer.early_stop.patience epochs without improvement
REACHED_EPOCHS = "epochs"        # trainer.epochs, the cap
JOB_NUM = "job.num"
JOB_OVERRIDES = "job.overrides"
SWEEP_OVERRIDES = "sweep.overrides"
SWEEP_JOBS = "sweep.jobs"
SWEEP_VARYING = "sweep.varying"
SWEEP_FIRST_JOB = "sweep.first_job"  # its first job's overrides: the default baseline
SWEEP_TO_TRAIN = "sweep.to_train"   # the jobs a sweep launched (not finished before)
SWEEP_LAUNCHED = "sweep.launched"   # when it launched them (seconds since the epoch)
AHEAD = "cifar_sweep.ahead"          # on a reference run the sweep wrote before launching
PEAK_MEMORY = "peak_memory"     # what the peak_memory_mb metric measured: process_rss, gpu_allocated
PREDICTIONS = "predictions"     # the run's test predictions artifact (tracking/predictions.py)
FAILURE = "failure_reason"
INTERRUPTED = "interrupted"      # the failure_reason (prefix) of a run that may be continued
OWNER_HOST = "owner.host"
OWNER_PID = "owner.pid"
OWNER_START = "owner.start"
OWNER_SLURM_JOB = "owner.slurm_job"          # on a cluster: the array job and task
OWNER_SLURM_RESTART = "owner.slurm_restart"  # how often SLURM has requeued it
HEARTBEAT = "heartbeat"
HEARTBEAT_TIMEOUT = "heartbeat.timeout_s"
TRIAL = "hpo.trial"              # on a search's job: its trial number in the Optuna study
TRIAL_STATE = "hpo.state"        # on a pruned trial's run: pruned
HPO_STUDY = "hpo.study"          # on a search's job: the Optuna study's name,
HPO_STUDY_UID = "hpo.study_uid"  # the id made when the study was created (a study made again
                                 # under the same name, after its storage was deleted, gets another)
HPO_STORAGE = "hpo.storage"      # and where it is stored
HPO_BEST_TRIAL = "hpo.best_trial"  # on a search's parent: its best trial's number,
HPO_BEST = "hpo.best."             # prefix: and that trial's values (hpo.best.lr.value, ...)
COMPARE_VIEW = "cifar_sweep.compare_view"  # on a sweep's parent: the link to its runs' view
# an experiment's tag (prefix), then the view's key: MLflow's UI keeps its named views there
SHARED_VIEW = "mlflow.sharedViewState."
# MLflow 3's UI opens an experiment without this tag on its GenAI traces view, not the runs table
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
