"""The reader's fast paths (helper process, read-ahead) write the same bytes as the plain one."""

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


def test_serial_helper_and_read_ahead_identical(sizes_tree: Path) -> None:
    check.check_same(sizes_tree)


def test_every_split_between_processes_identical(sizes_tree: Path) -> None:
    check.check_splits(sizes_tree)


def test_abandoned_reader_is_reusable(sizes_tree: Path) -> None:
    check.check_abandoned(sizes_tree)


def test_files_changing_after_the_plan(tmp_path: Path) -> None:
    check.check_changes(tmp_path)
