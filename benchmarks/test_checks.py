"""What the test suite checks, counted at two commits: the `assert` statements in tests/, those in
tests that read a store back (MLflow's client, `Project.runs`, `results`), and the tests that start
a process. Moving tests in-process (issue 43) must not lose a check.

    python benchmarks/test_checks.py 4a6f3fd HEAD
"""

import ast
import subprocess
import sys

READS_STORE = ("client", "runs(", "search_runs", "results.", "get_run", "get_metric_history")
PROCESS = ("project.train(", "project.run(", ".train(", "subprocess.", "Popen(")


def counts(commit: str) -> dict[str, int]:
    names = subprocess.run(["git", "ls-tree", "--name-only", commit, "tests/"], check=True,
                           capture_output=True, text=True).stdout.split()
    total = {"asserts": 0, "asserts reading a store": 0, "tests": 0, "tests starting a process": 0}
    for name in names:
        if not name.endswith(".py"):
            continue
        source = subprocess.run(["git", "show", f"{commit}:{name}"], check=True,
                                capture_output=True, text=True).stdout
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            body = ast.get_source_segment(source, node) or ""
            asserts = sum(isinstance(n, ast.Assert) for n in ast.walk(node))
            total["asserts"] += asserts
            if any(k in body for k in READS_STORE):
                total["asserts reading a store"] += asserts
            if node.name.startswith("test_"):
                total["tests"] += 1
                total["tests starting a process"] += any(k in body for k in PROCESS)
    return total


if __name__ == "__main__":
    before, after = sys.argv[1:3] if len(sys.argv) > 2 else ("HEAD~1", "HEAD")
    a, b = counts(before), counts(after)
    for key in a:
        print(f"{key:28s} {before}: {a[key]:5d}   {after}: {b[key]:5d}")
