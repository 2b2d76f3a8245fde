"""Every run (or experiment) an MLflow search matches, page by page.

`MlflowClient.search_runs` returns one page (`max_results`, at most 50,000) and says nothing of
the rest: a table, a sweep's count of its jobs or the ghost check would be cut silently past it.
Every read of runs goes through `all_runs`, which follows the page token to the end.
"""

from __future__ import annotations

import os

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from cifar_sweep.errors import UserInputError

# runs per request: large pages are few round trips to a server; the environment variable makes
# pages small where a test shows that a search over many pages is complete
PAGE_SIZE = 10_000
PAGE_SIZE_ENV = "CIFAR_SWEEP_PAGE_SIZE"


def page_size() -> int:
    text = os.environ.get(PAGE_SIZE_ENV)
    if text is None:
        return PAGE_SIZE
    if not text.isdigit() or not 1 <= int(text) <= 50_000:
        raise UserInputError(f"{PAGE_SIZE_ENV}={text} is invalid: allowed: an integer from 1 "
                             "to 50000 (MLflow's most runs per page)")
    return int(text)


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "",
             order_by: list[str] | None = None, run_view_type: int = ViewType.ACTIVE_ONLY) -> list:
    """Every run the search matches, in its order (by default the newest first)."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, run_view_type=run_view_type,
                                  max_results=page_size(), order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def all_experiments(client: MlflowClient, view_type: int = ViewType.ACTIVE_ONLY) -> list:
    """Every experiment of the store (active ones by default)."""
    experiments: list = []
    token = None
    while True:
        page = client.search_experiments(view_type=view_type, max_results=page_size(),
                                         page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments
