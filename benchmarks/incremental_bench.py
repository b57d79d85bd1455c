#!/usr/bin/env python3
"""A level-1 run after changing ~1 % of the mixed corpus, beside the full run (issue 13).

    python3 benchmarks/incremental_bench.py [--quick] [--runs N] [--fraction 0.01]

Builds its own copy of the `mixed` corpus of benchmarks/run (the run changes files in it)
under $ECARCHIVE_BENCH_DIR/incremental, writes level 0, rewrites the first bytes of whole
files until `fraction` of the bytes changed, then takes turns: a full run (`--level 0`) and a
level-1 run from the level-0 snapshot, each `create -g SNAP | wc -c`. Reports the medians of
wall time and CPU time, the archive bytes, and the plaintext files and bytes each run opened
(from an strace of one extra run of each: openat of corpus files).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "benchmark passphrase, not a secret"


def _bench_run_module():  # type: ignore[no-untyped-def]
    loader = importlib.machinery.SourceFileLoader("bench_run", str(REPO / "benchmarks" / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    return dict(os.environ, ECARCHIVE_PASSPHRASE=PASSPHRASE, PYTHONPATH=str(REPO))


def _create(src: Path, snap: Path, extra: str = "") -> str:
    py = shlex.quote(sys.executable)
    return (
        f"{py} -m ecarchive create -q -g {shlex.quote(str(snap))} {extra} {shlex.quote(str(src))}"
    )


def timed(command: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the children, and the byte count `wc -c` printed."""
    before = os.times()
    start = time.monotonic()
    out = subprocess.run(
        f"{command} | wc -c", shell=True, env=_env(), check=True, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu, int(out.stdout.strip())


def opened(command: str, src: Path, work: Path) -> tuple[int, int]:
    """Regular files under SRC the run opened, and their bytes (strace, one run)."""
    log = work / "strace.log"
    subprocess.run(
        f"strace -f -qq -e trace=openat -o {shlex.quote(str(log))} {command} > /dev/null",
        shell=True,
        env=_env(),
        check=True,
    )
    prefix = str(src) + "/"
    files: set[str] = set()
    for line in log.read_text(errors="replace").splitlines():
        if "= -1" in line or prefix not in line or "O_DIRECTORY" in line:
            continue
        path = line.split('"', 2)[1]
        if os.path.isfile(path) and not os.path.islink(path):
            files.add(path)
    log.unlink()
    return len(files), sum(os.path.getsize(p) for p in files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--fraction", type=float, default=0.01)
    args = p.parse_args()
    bench = _bench_run_module()
    base = Path(os.environ.get("ECARCHIVE_BENCH_DIR", "/var/tmp/ecarchive-bench")) / "incremental"
    work = base / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "mixed"
    src.mkdir()
    bench.build_mixed(src, args.quick)
    files = [
        Path(d) / n for d, _, ns in os.walk(src) for n in ns if not os.path.islink(Path(d) / n)
    ]
    total = sum(f.stat().st_size for f in files)
    snap0 = work / "snap0"
    subprocess.run(_create(src, snap0) + " > /dev/null", shell=True, env=_env(), check=True)
    sys.path.insert(0, str(REPO))
    from tests.support.chain_tree import change_one_percent

    changed = change_one_percent(src, files, args.fraction)
    print(
        f"corpus: {len(files)} files, {total} bytes; changed {changed} bytes "
        f"({100 * changed / total:.2f} %)"
    )
    subprocess.run(f"tar cf - -C {shlex.quote(str(src))} . > /dev/null", shell=True, check=True)
    full_snap, inc_snap = work / "snap-full", work / "snap-inc"
    results: dict[str, list[tuple[float, float, int]]] = {"full": [], "level 1": []}
    for _ in range(args.runs):
        shutil.copy(snap0, full_snap)
        results["full"].append(timed(_create(src, full_snap, "--level 0")))
        shutil.copy(snap0, inc_snap)
        results["level 1"].append(timed(_create(src, inc_snap)))
    shutil.copy(snap0, full_snap)
    shutil.copy(snap0, inc_snap)
    reads = {
        "full": opened(_create(src, full_snap, "--level 0"), src, work),
        "level 1": opened(_create(src, inc_snap), src, work),
    }
    print(f"uptime: {os.getloadavg()}")
    print("run      wall s (median)  CPU s (median)  archive bytes   files opened  bytes opened")
    for name, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        size = rows[0][2]
        n, nbytes = reads[name]
        print(f"{name:8} {wall:15.2f} {cpu:15.2f} {size:15d} {n:13d} {nbytes:13d}")
    full, inc = results["full"], results["level 1"]
    ratio_time = statistics.median(r[0] for r in inc) / statistics.median(r[0] for r in full)
    print(
        f"level 1 / full: time {ratio_time:.3f}, archive bytes {inc[0][2] / full[0][2]:.4f}, "
        f"bytes opened {reads['level 1'][1] / max(reads['full'][1], 1):.4f}"
    )
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
