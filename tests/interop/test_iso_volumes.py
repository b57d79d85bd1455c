"""Spanned volumes are independent ISO images that together hold the whole tree."""

from __future__ import annotations

import os
from pathlib import Path

from ecarchive.iso import image_size
from ecarchive.volumes import split_volumes
from tests.interop.test_iso_trees import (
    RESTORE,
    bsdtar_items,
    build_iso,
    expected_items,
    make_mixed_tree,
    plan_from_tree,
)

CAPACITY = 400 * 1024


def test_each_volume_is_a_complete_image(tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_mixed_tree(source, target_len=900)
    for index in range(12):
        (source / f"bulk-{index:02d}").write_bytes(os.urandom(60_000))
    entries = plan_from_tree(source)
    volumes = split_volumes(entries, CAPACITY, image_size)
    assert len(volumes) >= 2
    union: dict[str, object] = {}
    for number, volume in enumerate(volumes):
        image = tmp_path / f"vol-{number:02d}.iso"
        layout = build_iso(list(volume), image)
        assert image.stat().st_size == layout.size <= CAPACITY
        listed = bsdtar_items(image)
        assert listed == expected_items(list(volume))  # readable on its own, links included
        assert RESTORE.decode() in listed
        union.update(listed)
    assert union == expected_items(entries)
