"""data/subsets.py: a stratified subset of the data for smoke runs (`data.subset`,
`data.test_subset`), checked against counts computed here; through the entrypoint, the run's
data fingerprint, its splits' sizes, its predictions' positions in the full test set, the
table's data line, and a bad size as one line."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from cifar_sweep.data import SyntheticSource
from cifar_sweep.data.subsets import cut, full_test_positions, size, stratified
from cifar_sweep.data.tensors import Dataset
from cifar_sweep.errors import UserInputError
from cifar_sweep.report.rows import data_of

TRAIN, TEST, CLASSES = SyntheticSource(num_train=600, num_test=200, num_classes=4, seed=5).decode()
FULL = Dataset(TRAIN, TEST, CLASSES, "synthetic-0123456789abcdef0123")


def test_each_class_gets_its_share_of_the_subset():
    counts = Counter(TRAIN.labels.tolist())
    for n in (4, 7, 50, 123, 599):
        chosen = stratified(TRAIN.labels, n, seed=0)
        assert len(chosen) == n == len(set(chosen.tolist()))
        assert chosen.tolist() == sorted(chosen.tolist())  # in the split's order
        got = Counter(TRAIN.labels[chosen].tolist())
        for cls, total in counts.items():  # within one image of its exact share
            assert abs(got[cls] - n * total / len(TRAIN)) < 1, (n, cls)


def test_the_seed_draws_it():
    a, b = stratified(TRAIN.labels, 100, 0), stratified(TRAIN.labels, 100, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, stratified(TRAIN.labels, 100, 1))


@pytest.mark.parametrize("spec, count", [(100, 100), (100.0, 100), (0.25, 150), (0.001, None),
                                         (601, None), (0, None), (-3, None), (2.5, None),
                                         (1, None)])
def test_a_count_or_a_fraction(spec, count):
    if count is None:
        with pytest.raises(UserInputError, match=r"^data\.subset="):
            size(spec, 600, "data.subset", "training")
    else:
        assert size(spec, 600, "data.subset", "training") == count


def test_the_cut_names_its_subset_and_keeps_the_full_test_positions():
    small = cut(FULL, 0.5, 40, seed=0)
    train_index = stratified(TRAIN.labels, 300, 0)
    assert torch.equal(small.train.images, TRAIN.images[train_index])
    assert torch.equal(small.train.labels, TRAIN.labels[train_index])
    positions = full_test_positions(small)
    assert positions is not None and len(positions) == 40 == len(small.test)
    assert torch.equal(small.test.images, TEST.images[positions])
    assert small.fingerprint.startswith(f"{FULL.fingerprint}-subset300-test40-")
    # the same subset, the same fingerprint; another seed's images, another
    assert cut(FULL, 300, 40, seed=0).fingerprint == small.fingerprint
    assert cut(FULL, 300, 40, seed=1).fingerprint != small.fingerprint
    train_only = cut(FULL, 300, None, seed=0)
    assert full_test_positions(train_only) is None and train_only.test is TEST
    assert cut(FULL, None, None, seed=0) is FULL
    assert cut(FULL, 600, 200, seed=0) is FULL  # all of it: the same images, the same data


def test_the_tables_data_line_names_the_subset():
    run = pd.Series({"data.title": "CIFAR-10", "data.subset": "1000", "data.test_subset": "None",
                     "data.split_seed": "0", "data_fingerprint": "x"})
    assert data_of(run)["data"] == ("CIFAR-10, subset: 1000 training images (stratified by "
                                    "class, split seed 0)")
    run["data.test_subset"] = "0.1"
    assert data_of(run)["data"].endswith("1000 training images, 10% of the test images "
                                         "(stratified by class, split seed 0)")
    assert data_of(pd.Series({"data.title": "CIFAR-10", "data.subset": "None"}))["data"] \
        == "CIFAR-10"


# --- through the entrypoint -------------------------------------------------------------------

RUN = ("data.subset=0.15", "data.test_subset=100", "tracking.figures=false",
       "tracking.log_model=false")
SWEEP = ("-m", "hydra/launcher=basic", *RUN)


def test_a_subset_run_is_its_own_experiment_and_its_predictions_name_full_positions(project):
    first = project.job(*RUN, check=True)
    [run] = [r for r in project.runs() if r.data.tags.get("cifar_sweep.role") == "job"]
    fingerprint = run.data.tags["data_fingerprint"]
    assert fingerprint.startswith("synthetic-500c68d943a271567435-subset300-test100-")
    output = first.stdout + first.stderr
    assert "epoch 1/1" in output
    # progress inside the epoch (job/batch_progress.py): nothing in a short run off a terminal
    assert "left in the epoch" not in output and "img/s" not in output

    inputs = {json.loads(d.dataset.profile)["images"]: d for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == sorted([round(300 * 0.8), round(300 * 0.2), 100])
    full_train, full_test, _ = SyntheticSource().decode()
    local = project.client.download_artifacts(run.info.run_id, "predictions.npz",
                                              str(project.workdir))
    with open(local, "rb") as f:
        kept = dict(np.load(io.BytesIO(f.read())))
    assert len(kept["index"]) == 100 == len(set(kept["index"].tolist()))
    # each prediction's label is the full test set's label at the position it names
    assert np.array_equal(kept["label"], full_test.labels.numpy()[kept["index"]])
    counts = Counter(full_test.labels[torch.as_tensor(kept["index"])].tolist())
    full_counts = Counter(full_test.labels.tolist())
    assert all(abs(counts[c] - 100 * n / 500) < 1 for c, n in full_counts.items())


def test_a_subset_larger_than_the_data_is_one_line_and_no_run(project):
    proc = project.job("data.subset=5000")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: data.subset=5000 asks for 5000 images; the data has "
                                   "2000 training images: give at most 2000, or a fraction "
                                   "below 1")
    assert project.runs() == []


@pytest.mark.slow  # two sweeps, about 40 s here; the default suite runs the first of them above
def test_the_sweeps_plan_and_the_job_agree_on_a_subsets_identity(project):
    """The plan (data loaded once per sweep) and the job give a subset one fingerprint: the same
    command again trains nothing, and a full-data run is another experiment."""
    project.train(*SWEEP, check=True)
    again = project.train(*SWEEP, check=True)
    assert "already finished" in again.stdout and "epoch 1/1" not in again.stdout
    full = project.train(*[o for o in SWEEP if "subset" not in o], check=True)
    assert "already finished" not in full.stdout
    jobs = [r for r in project.runs() if r.data.tags.get("cifar_sweep.role") == "job"]
    assert len({r.data.tags["config_hash"] for r in jobs}) == 2
