"""Where a report's files go. Two kinds of output, apart:

- `reports/` (PUBLISHED, tracked by git): the project's published tables, written only by
  `make tables` with no arguments (`src/report.py all published`), one folder per preset study
  (`reports/<study>/`), the search's, and `reports/models.md`;
- `results/` (USER, ignored by git): everything a user's study, sweep or report writes, one
  folder per sweep: `results/<study or experiment>/<sweep's start, UTC>_<sweep id>/`, a preset
  study's folder named by the preset (`results/lr/...`), with `LATEST` and `index.md` beside
  them naming the newest; a search's `results/<its experiment>/`.

So running a study never changes a tracked file, and its runs record a clean git commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

PUBLISHED = Path("reports")
# the published tables' runs (`make publish-store`), what `make tables` alone reads
PUBLISHED_STORE = PUBLISHED / "store"
USER = Path("results")


def sweep_folder(client, base: Path, sweep_id: str) -> Path:
    """`<base>/<start, UTC>_<id>`: a folder per sweep, so that the next sweep of the same
    study or experiment does not overwrite this one's files; named so that they sort by time."""
    start = datetime.fromtimestamp(client.get_run(sweep_id).info.start_time / 1000, UTC)
    return base / f"{start:%Y-%m-%d_%H-%M-%S}_{sweep_id[:8]}"


def index_sweeps(base: Path) -> None:
    """`<base>/LATEST` (the newest sweep's folder name, one line: `cat` it in a script) and
    `<base>/index.md` (every sweep's folder, newest first). Plain files, not a `latest`
    symlink: a symlink does not survive a zip, a Windows checkout or an artifact upload."""
    folders = sorted((p.name for p in base.iterdir() if p.is_dir() and (p / "table.md").is_file()),
                     reverse=True)
    if not folders:
        return
    (base / "LATEST").write_text(folders[0] + "\n")
    lines = [f"# Sweeps of {base.name}, newest first", "",
             f"Latest: [{folders[0]}]({folders[0]}/table.md)", ""]
    for name in folders:
        title = (base / name / "table.md").read_text().splitlines()[0].lstrip("# ")
        lines.append(f"- [{name}]({name}/table.md): {title}")
    (base / "index.md").write_text("\n".join(lines) + "\n")


def user_folder(client, name: str, sweep_id: str) -> Path:
    """A user's study or sweep: `results/<name>/<start>_<id>/` (`name`: the preset, else the
    experiment)."""
    return sweep_folder(client, USER / name, sweep_id)
