"""report/protocol.py: a table's caption says "at the report's protocol" only where the settings
its runs share are the report's (written out here by hand from the report, not read from conf/)."""

from __future__ import annotations

from cifar_sweep.report.protocol import at_report_protocol, report_protocol

# the report's protocol as the runs log it: ModifiedNet, batch 64, the 80/20 split, SGD 0.005
# with momentum 0.9, a constant rate, cross-entropy, flip + rotation up to 10 degrees
REPORT = {"model._target_": "cifar_sweep.models.ModifiedNet", "trainer.batch_size": "64",
          "trainer.val_fraction": "0.2", "optimizer._target_": "torch.optim.SGD",
          "optimizer.momentum": "0.9", "lr.value": "0.005",
          "lr.schedule._target_": "cifar_sweep.schedules.constant",
          "loss._target_": "cifar_sweep.losses.cross_entropy", "loss.label_smoothing": "0.0",
          "augment._target_": "cifar_sweep.batches.Augment", "augment.hflip": "True",
          "augment.rotate_degrees": "10.0"}
OTHER = {"trainer.epochs": "100", "data_fingerprint": "image_folder-35b8", "trainer.seed": "0"}


def test_conf_defaults_are_the_reports_protocol():
    assert {k: report_protocol()[k] for k in REPORT} == REPORT


def test_a_study_at_the_protocol_but_its_axis_is_at_it():
    assert at_report_protocol({**REPORT, **OTHER})
    lr_study = {k: v for k, v in REPORT.items() if k != "lr.value"}  # lr.value: the rows'
    assert at_report_protocol({**lr_study, **OTHER})
    arch = {k: v for k, v in REPORT.items() if not k.startswith("model.")}
    assert at_report_protocol(arch)


def test_another_fixed_setting_is_not_the_protocol():
    for key, value in (("trainer.batch_size", "128"), ("augment.rotate_degrees", "0.0"),
                       ("optimizer.momentum", "0.0"), ("loss.label_smoothing", "0.1"),
                       ("trainer.val_fraction", "0.1")):
        assert not at_report_protocol({**REPORT, key: value}), key


def test_a_table_that_does_not_show_the_batch_split_or_augmentation_claims_nothing():
    for key in ("trainer.batch_size", "trainer.val_fraction", "augment._target_"):
        assert not at_report_protocol({k: v for k, v in REPORT.items() if k != key}), key
    assert not at_report_protocol({})  # a hand-made table: nothing known
