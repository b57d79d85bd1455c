"""Errors raised by the ISO 9660 writer.

Every layout problem is found by `plan_iso` before the first output byte; only a body that
yields the wrong number of bytes can fail once writing has started.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EcarchiveError

MAX_LISTED_PROBLEMS = 10


class IsoError(EcarchiveError):
    """Base class of every ISO writer error (fatal, exit status 2)."""


class IsoPlanError(IsoError):
    """The plan cannot be written as an ISO image; `problems` lists every reason found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        shown = "\n  ".join(self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"cannot lay out the ISO image ({len(self.problems)} problem(s)):\n  {shown}{tail}",
            hint="nothing was written; --exclude these paths or use --format tar",
        )


class IsoLabelError(IsoError):
    """The volume label cannot be stored as an ISO 9660 volume identifier."""


class IsoBodySizeError(IsoError):
    """A body yielded a different number of bytes than the plan announced."""

    def __init__(self, path: bytes, expected: int, got: int) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        relation = "more" if got > expected else "fewer"
        super().__init__(
            f"{path.decode(errors='replace')}: the body yielded {relation} bytes than planned "
            f"({got} instead of {expected}); the ISO layout was fixed before writing, so the "
            "image would be corrupt"
        )


class IsoInternalError(IsoError):
    """The writer disagrees with its own layout (a bug in ecarchive, never in the input)."""
