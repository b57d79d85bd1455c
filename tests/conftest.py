"""Suite-wide setup: the host tools the tests drive are installed before collection (their
skip markers are evaluated then), so a fresh root machine skips nothing."""

from __future__ import annotations

import os

import pytest

from tests.kernel.vmsetup import VmUnavailable
from tests.support import tools


def pytest_configure(config: pytest.Config) -> None:
    try:
        absent, why = tools.ensure(), "not root or no apt-get"
    except VmUnavailable as e:
        absent, why = tools.missing(), str(e)
    if absent and os.environ.get("CI") == "true":
        # elsewhere the tests that need them skip with the reason
        raise pytest.UsageError(f"the tests need {absent} and they cannot be installed: {why}")
