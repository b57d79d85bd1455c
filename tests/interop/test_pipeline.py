"""The threaded reader writes the same bytes as the plain computation, for every --jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import check_pipeline as check


@pytest.fixture(scope="module")
def sizes_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "sizes"
    root.mkdir()
    check.make_tree(root)
    return root


def test_every_jobs_count_identical(sizes_tree: Path) -> None:
    check.check_same(sizes_tree)


def test_abandoned_reader_is_reusable(sizes_tree: Path) -> None:
    check.check_abandoned(sizes_tree)


def test_files_changing_after_the_plan(tmp_path: Path) -> None:
    check.check_changes(tmp_path)
