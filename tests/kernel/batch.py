"""One oracle boot for every selected test module that can share it.

A test module opts in by defining

    def oracle_jobs(work: Path) -> tuple[Sequence[Job], object]

(host-side preparation in `work`, the guest jobs, and whatever state its tests need), and reads
its share back with `oracle_batch.section(__name__)`. Only modules with selected tests are
prepared, so `pytest -k forward` boots with the forward jobs alone. A module whose preparation
raises gets its traceback as the failure of each of its tests; the others still run.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from tests.kernel.vm import Boot, Job, JobResult

PROVIDER = "oracle_jobs"
RunJobs = Callable[[Sequence[Job], Path], Boot]


@dataclasses.dataclass(frozen=True)
class Section:
    """One module's share of the boot: its jobs' results under their own names."""

    results: dict[str, JobResult]
    state: object
    boot: Boot | None


@dataclasses.dataclass(frozen=True)
class Batch:
    sections: dict[str, Section]
    errors: dict[str, str]

    def section(self, module: str) -> Section:
        if module in self.errors:
            raise AssertionError(
                f"{module}: preparing its oracle jobs failed\n{self.errors[module]}"
            )
        if module not in self.sections:
            raise AssertionError(f"{module} defines no {PROVIDER}() or has no selected tests")
        return self.sections[module]


def providers(modules: Sequence[ModuleType]) -> list[ModuleType]:
    """The distinct modules that define `oracle_jobs`, in first-seen order."""
    seen: dict[str, ModuleType] = {}
    for module in modules:
        if callable(getattr(module, PROVIDER, None)):
            seen.setdefault(module.__name__, module)
    return list(seen.values())


def run_batch(modules: Sequence[ModuleType], run: RunJobs, work: Path) -> Batch:
    jobs: list[Job] = []
    owners: dict[str, tuple[str, str]] = {}  # boot job name -> (module, job name)
    states: dict[str, object] = {}
    errors: dict[str, str] = {}
    for module in modules:
        tag = module.__name__.rsplit(".", 1)[-1]
        (work / tag).mkdir(parents=True)
        try:
            module_jobs, states[module.__name__] = getattr(module, PROVIDER)(work / tag)
        except Exception:  # reported through the module's tests, not the whole session
            errors[module.__name__] = traceback.format_exc()
            continue
        for job in module_jobs:
            name = f"{tag}.{job.name}"
            owners[name] = (module.__name__, job.name)
            jobs.append(dataclasses.replace(job, name=name))
    boot = run(jobs, work / "vm") if jobs else None
    if boot is not None:
        print(boot.summary())
    sections = {
        name: Section({}, state, boot) for name, state in states.items() if name not in errors
    }
    for name, (owner, job_name) in owners.items():
        if boot is not None:
            result = boot.results[name]
            sections[owner].results[job_name] = dataclasses.replace(result, name=job_name)
    return Batch(sections, errors)
