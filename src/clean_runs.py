"""Close ghost runs in the whole store: RUNNING runs whose owner process is gone (this host) or
whose heartbeat stopped (other hosts) become KILLED, and the next job of their config continues
them from their checkpoint. Jobs and sweeps do this for their own experiment when they start.

    python src/clean_runs.py [tracking.uri=...]        (or `make clean-runs`)
"""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str]) -> int:
    from cifar_sweep.tracking import lifecycle
    from cifar_sweep.tracking.experiments import open_store

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[a for a in argv if a.startswith("tracking.")])
    client = open_store(cfg.tracking)
    closed = lifecycle.close_ghosts(client, lifecycle.active_experiments(client))
    print(f"closed {len(closed)} ghost run(s){': ' if closed else ''}{' '.join(closed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
