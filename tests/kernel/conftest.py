"""Kernel oracle fixtures. Under CI=true an oracle that cannot run fails the suite; elsewhere
the tests are skipped with the reason (no qemu, no apt, offline...)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # tests.support / tests.kernel are imported as packages of the repository root.
    sys.path.insert(0, str(REPO))

from tests.kernel import batch, vm, vmsetup  # noqa: E402

RunJobs = Callable[[Sequence[vm.Job], Path], vm.Boot]


def _unavailable(exc: Exception) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"kernel oracle must run in CI but cannot: {exc}", pytrace=False)
    pytest.skip(f"kernel oracle unavailable: {exc}")


@pytest.fixture(scope="session")
def guest_image() -> vmsetup.GuestImage:
    try:
        return vmsetup.prepare()
    except vmsetup.VmUnavailable as exc:
        _unavailable(exc)
        raise  # unreachable: skip/fail raise


@pytest.fixture(scope="session")
def run_in_guest(guest_image: vmsetup.GuestImage) -> RunJobs:
    """`run_in_guest(jobs, workdir)`: one boot for the whole batch."""

    def run(jobs: Sequence[vm.Job], workdir: Path) -> vm.Boot:
        try:
            return vm.run_jobs(guest_image, jobs, workdir)
        except vmsetup.VmUnavailable as exc:
            _unavailable(exc)
            raise

    return run


@pytest.fixture(scope="session")
def oracle_batch(
    request: pytest.FixtureRequest,
    run_in_guest: RunJobs,
    tmp_path_factory: pytest.TempPathFactory,
) -> batch.Batch:
    """A single boot for all selected modules that define `oracle_jobs` (see batch.py)."""
    modules = batch.providers(
        [m for item in request.session.items if (m := getattr(item, "module", None))]
    )
    return batch.run_batch(modules, run_in_guest, tmp_path_factory.mktemp("oracle"))
