"""Publish a working store with the project (`make publish-store`): its database and the artifacts
the tables read, copied into the repository's published store with nothing naming this machine.

    python src/publish_store.py STORE DEST     STORE: a local store folder (tracking.uri=<folder>)
    python src/publish_store.py --check DEST   what in DEST still names a machine (nothing: exit 0)
    python src/publish_store.py --readable DIR a store folder MLflow can open for DIR: a published
                                               store's copy in the temporary folder, else DIR
"""

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from cifar_sweep.errors import UserInputError
    from cifar_sweep.tracking import publish

    if argv[:1] in (["-h"], ["--help"]) or len(argv) != 2:
        print(__doc__.strip(), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    if argv[0] == "--readable":
        folder = Path(argv[1])
        print(publish.working_copy(folder, keep=True) if publish.is_published(folder) else folder.resolve())
        return 0
    if argv[0] == "--check":
        left = publish.machine_strings(Path(argv[1]) / publish.DB)
        print("\n".join(left) or f"{argv[1]}: names no path or host")
        return 1 if left else 0
    try:
        done = publish.publish(argv[0], Path(argv[1]))
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published {done.runs} runs and {done.artifacts} artifacts to {done.folder}/ "
          f"({done.size_mb:.1f} MB); commit it a few times only: each commit keeps a copy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
