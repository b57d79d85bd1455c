"""A streaming ISO 9660 + Rock Ridge writer for ecarchive plans.

The image is laid out completely from the plan (`plan_iso`, no file reads) and then written
strictly front to back (`write_iso`), so it can feed a burner's pipe:

    system area | PVD | terminator | L and M path tables |
    (directory records, their CE blocks) per directory | file data

Choices, with reasons :

- ISO names are generated (`0A`, `0B.;1`): every reader that matters uses Rock Ridge NM,
  and short identifiers leave room in the 255-byte record for PX, TF and NM.
- Rock Ridge 1.12: SP + ER (RRIP_1991A) at the root, PX (44 bytes, serial shared by hard
  links, nlink = names in the image), TF (7-byte MODIFY/ACCESS/ATTRIBUTES = mtime), PN for
  devices, NM and SL split over several entries and chained continuation blocks. No RR entry,
  no TF LONG_FORM (Linux before 6.16 misreads it), no Joliet.
- Deep trees are written as they are, without RE/CL/PL relocation: Linux, libarchive,
  libisofs and isoinfo read any depth, while relocation adds a visible `rr_moved` directory
  and a history of reader bugs. This deviates from ECMA-119's 8-level limit on purpose.
- Files larger than 4 GiB - 1 become level-3 multi-extent files: sections of 0xFFFFF800
  bytes in consecutive extents, every section record carrying the full Rock Ridge data.
  The image is therefore ISO 9660 level 3.
- Hard links share one extent; the data is written once.
- Volume dates come from `volume_time_ns`, so identical plans give identical images.
"""

from __future__ import annotations

from .errors import (
    IsoBodySizeError,
    IsoError,
    IsoInternalError,
    IsoLabelError,
    IsoPlanError,
)
from .layout import IsoLayout, image_size, plan_iso, volume_identifier
from .writer import write_iso

SECTOR_SIZE = 2048

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
