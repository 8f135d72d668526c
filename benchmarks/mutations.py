"""The mutation check: realistic bugs planted one at a time in a scratch copy of the repository; the tests that
guard a method (`pytest -k NAME`, NAME its registry name) must fail for every one of that method's bugs.

Each method's test entry declares its mutations (tests/methods/test_<module>.py, `SPECS[NAME].mutations`).
Each mutation replaces one exact piece of source (which must occur exactly once, so a refactor that moves the
code makes the mutation fail loudly rather than silently test nothing) and names the method whose tests must
catch it. A mutation is *caught* when pytest exits 1 (a test failed); exit 0 is *missed*; anything else (no
test selected, an import error of the copy) is reported as an error. The first failing test is recorded.

    python benchmarks/mutations.py [methods=simclr,byol] [only=SUBSTRING] [jobs=1] [record=true]
    python benchmarks/mutations.py only=SUBSTRING run="python benchmarks/learning_margins.py methods=byol"

run= runs that command in the mutated copy instead of the tests and prints its output (how the learning
test's collapse bars were measured on broken runs).

Runs from the repository root with its virtual environment's python; record=true appends the table (mutation
-> catching test) to benchmarks/RESULTS.md. Rerun it when a method or a mutation is added.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))  # tests.method_specs: each method's test entry declares its mutations


@dataclass(frozen=True)
class Mutation:
    method: str  # registry name: `pytest -k method` must catch it
    bug: str  # what a developer might have written
    path: str  # file relative to the repository root
    old: str  # exact source, occurring exactly once
    new: str


def declared_mutations() -> list[Mutation]:
    """Every method's mutations, as its test entry declares them (tests/methods/, tests/method_specs.py)."""
    from tests.method_specs import specs

    return [Mutation(name, m.bug, m.path, m.old, m.new) for name, entry in specs().items() for m in entry.mutations]


MUTATIONS = declared_mutations()


def scratch_copy(destination: Path) -> None:
    """The tracked and untracked, not ignored, files of the repository: what a clean checkout holds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True, text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.bug!r}: its source occurs {count} times in {mutation.path}; update it")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_one(mutation: Mutation, command: str | None = None) -> dict[str, object]:
    """Plant the bug in a fresh copy and run the method's tests there, or `command` (the copy's selfsup is
    imported, not the installed one: PYTHONPATH points at the copy)."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp)
        scratch_copy(tree)
        apply(mutation, tree)
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0", "-k",
                  mutation.method, "-rfE", "--ignore=tests/test_mutations.py", "tests"]
        argv = pytest if command is None else [sys.executable, *shlex.split(command.removeprefix("python "))]
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        if command is not None:
            print(f"## {mutation.method}: {mutation.bug}\n{done.stdout}{done.stderr[-3000:]}", flush=True)
        seconds = time.perf_counter() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.M)
    status = {0: "MISSED", 1: "caught"}.get(done.returncode, f"error (pytest exit {done.returncode})")
    return {"mutation": mutation, "status": status, "test": failed[0] if failed else "", "seconds": seconds,
            "tail": done.stdout[-2000:]}


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    methods = set(options["methods"].split(",")) if "methods" in options else None
    chosen = [m for m in MUTATIONS if (methods is None or m.method in methods) and options.get("only", "") in m.bug]
    with ThreadPoolExecutor(int(options.get("jobs", 1))) as pool:
        results = list(pool.map(lambda m: run_one(m, options.get("run")), chosen))
    if "run" in options:
        return 0
    rows = []
    for r in results:
        m = r["mutation"]
        print(f"{r['status']:8} {m.method:10} {m.bug} -> {r['test'] or '-'} ({r['seconds']:.0f} s)", flush=True)
        if r["status"] != "caught":
            print(r["tail"])
        rows.append(f"| {m.method} | {m.bug} | `{m.path}` | {r['status']} | `{r['test'] or '-'}` |")
    missed = sum(r["status"] != "caught" for r in results)
    print(f"{len(results) - missed}/{len(results)} caught")
    if options.get("record") == "true":
        from results import append_section

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        header = [
            f"- command: `python benchmarks/mutations.py {' '.join(argv)}`; commit {commit}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; each mutation runs "
            "`pytest -x -k METHOD tests` on a scratch copy with the bug planted",
            f"- {len(results) - missed} of {len(results)} caught",
            "",
            "| method | mutation | file | result | first failing test |",
            "| --- | --- | --- | --- | --- |",
        ]
        append_section([f"\n## Mutation check: realistic bugs against each method's tests ({dt.date.today()})\n",
                        *header, *rows, ""])
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
