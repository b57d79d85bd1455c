"""The ISO 9660 sink: lay out a plan as an ISO image, then stream it.

This is the entry point the CLI uses; the writer itself lives in `ecarchive.iso`.

    layout = plan_iso(plan.entries, volume_label="ECARCHIVE", volume_time_ns=t)
    layout.size                      # exact bytes, for --print-size (no file is read)
    write_iso(layout, body, out)     # strictly sequential writes to a file or pipe
"""

from __future__ import annotations

from ..iso import (
    SECTOR_SIZE,
    IsoBodySizeError,
    IsoError,
    IsoInternalError,
    IsoLabelError,
    IsoLayout,
    IsoPlanError,
    image_size,
    plan_iso,
    volume_identifier,
    write_iso,
)

__all__ = [
    "SECTOR_SIZE",
    "IsoBodySizeError",
    "IsoError",
    "IsoInternalError",
    "IsoLabelError",
    "IsoLayout",
    "IsoPlanError",
    "image_size",
    "plan_iso",
    "volume_identifier",
    "write_iso",
]
