"""job/batch_progress.py: progress inside an epoch. The wrapped loader yields the loader's own
batches (training is unchanged, bit for bit); on a terminal a bar with images/s, elsewhere a
line every `interval` seconds whose numbers are checked against a fake clock, and nothing for a
short epoch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from cifar_sweep.batches import Augment, Loader, Normalize
from cifar_sweep.data.tensors import Split
from cifar_sweep.job import batch_progress
from cifar_sweep.job.batch_progress import BatchProgress
from conftest import ROOT

CPU = torch.device("cpu")
IMAGES = 201  # batches of 50: four, and a final one of one image, which the loader drops


def loader(seed: int = 0) -> Loader:
    images = torch.randint(0, 256, (IMAGES, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(7))
    split = Split(images, torch.arange(IMAGES) % 3)
    return Loader(split, 50, Normalize([0.5] * 3, [0.5] * 3, CPU), Augment(),
                  torch.Generator().manual_seed(seed))


def test_the_batches_and_the_generator_are_the_loaders_own():
    plain, wrapped = loader(), BatchProgress(loader(), 3, 0, terminal=False)
    for _ in range(2):  # two epochs: the permutation and augmentation drawn as before
        a, b = list(plain), list(wrapped)
        assert len(a) == len(b) == 4
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert torch.equal(plain.generator.get_state(), wrapped.generator.get_state())
    assert len(wrapped) == len(plain) and wrapped.batch_size == 50 and wrapped.training


class Clock:
    """time.monotonic for the module: 0.5 s a call after the first."""

    def __init__(self):
        self.now = -0.5

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_off_a_terminal_a_line_every_interval_with_rate_and_time_left(monkeypatch, caplog):
    monkeypatch.setattr(batch_progress.time, "monotonic", Clock())
    wrapped = BatchProgress(loader(), 30, 11, terminal=False, interval=1.0)
    with caplog.at_level(logging.INFO, logger="cifar_sweep"):
        list(wrapped)
    # batch k (50 images) ends at 0.5 k s: after batch 2, a second since the start: 100
    # images at 100 images/s, 100 left; after batch 4 another second, but the epoch is done
    # (its own line follows)
    expected = ["epoch 12/30: 100 of 200 images, 100 images/s, about 1 s left in the epoch"]
    assert [r.getMessage() for r in caplog.records] == expected


def test_an_epoch_shorter_than_the_interval_says_nothing(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="cifar_sweep"):
        list(BatchProgress(loader(), 3, 0, terminal=False))
    assert caplog.records == [] and capsys.readouterr() == ("", "")


def test_on_a_terminal_a_bar_of_images_with_their_rate(capsys):
    list(BatchProgress(loader(), 3, 1, terminal=True))
    drawn = capsys.readouterr().err
    assert "epoch 2/3" in drawn and "/200 " in drawn and "img/s" in drawn  # of 200 images


@pytest.mark.parametrize("images, batch, expected", [(201, 50, 200), (200, 50, 200),
                                                      (151, 50, 150), (7, 2, 6)])
def test_the_images_an_epoch_yields(images, batch, expected):
    split = Split(torch.zeros(images, 3, 2, 2, dtype=torch.uint8), torch.zeros(images).long())
    train = Loader(split, batch, Normalize([0.5] * 3, [0.5] * 3, CPU),
                   generator=torch.Generator().manual_seed(0))
    assert BatchProgress(train, 1, 0).images == expected == sum(len(b[1]) for b in train)


# --- a job (in this process), and through the entrypoint on a terminal -------------------------

RUN = ("trainer.epochs=2", "tracking.figures=false", "tracking.log_model=false")


def test_a_run_off_a_terminal_writes_a_line_at_each_interval(project):
    """A log (here a job in this process, its stderr no terminal) with a short interval: lines of images done in the epoch; their
    counts are whole batches of the 1,600 training images (2,000 less the 20% validation)."""
    proc = project.job(*RUN, check=True, env={batch_progress.INTERVAL_ENV: "0.05"})
    lines = [line for line in proc.stdout.splitlines() if "left in the epoch" in line]
    assert lines, proc.stdout
    for epoch in (1, 2):
        seen = [int(line.split(f"epoch {epoch}/2: ")[1].split(" of ")[0])
                for line in lines if f"epoch {epoch}/2: " in line]
        assert seen and seen == sorted(seen) and all(n % 64 == 0 and n < 1600 for n in seen)
    assert all(" of 1600 images, " in line and " images/s, about " in line for line in lines)
    assert "img/s" not in proc.stdout + proc.stderr


@pytest.mark.slow  # one more entrypoint run; the bar itself is held in-process above
def test_a_run_on_a_terminal_draws_the_bar(project):
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    from conftest import FAST, TRAIN

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, str(TRAIN), *FAST, *RUN], cwd=project.workdir,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(slave)
    drawn = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child ended: the terminal is closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=60) == 0, drawn.decode(errors="replace")
    text = drawn.decode(errors="replace")
    assert "epoch 1/2:" in text and "epoch 2/2:" in text and "/1.60k" in text and "img/s" in text
    assert "left in the epoch" not in text


LOST_SIGNAL = """
import signal, sys, weakref
from cifar_sweep.commands import interrupted
from cifar_sweep.job.batch_progress import BatchProgress

interrupted.install()
class Loader:
    split, batch_size = list(range(8)), 4
    def __len__(self): return 2
    def __iter__(self): yield 0, [1, 2, 3, 4]; yield 0, [1, 2, 3, 4]
class Thing: pass
thing = Thing()
# the handler runs inside a weakref callback: Python prints its SystemExit as ignored, drops it
ref = weakref.ref(thing, lambda r: signal.raise_signal(signal.SIGTERM))
del thing
print("received", interrupted.received, flush=True)
check = interrupted.raise_if_lost if sys.argv[1] == "checked" else None
drawn = 0
try:
    for batch in BatchProgress(Loader(), 1, 0, terminal=False, interrupted=check):
        drawn += 1
finally:
    print("drawn", drawn, flush=True)
"""


@pytest.mark.parametrize("mode, drawn, status", [("checked", 0, 143), ("unchecked", 2, 0)])
def test_a_signal_whose_exception_python_dropped_stops_at_the_next_batch(mode, drawn, status):
    """A real SIGTERM whose handler runs inside a weakref callback: Python drops its exception
    (unchecked: every batch is drawn and the process ends 0, as a job trained on to epoch 187);
    the job's check at every batch raises it again: no batch drawn, exit 143."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", LOST_SIGNAL, mode], capture_output=True,
                          text=True, timeout=60, env=env)
    assert "Exception ignored" in proc.stderr and "SystemExit: 143" in proc.stderr
    assert "received [15]" in proc.stdout and f"drawn {drawn}" in proc.stdout
    assert proc.returncode == status
