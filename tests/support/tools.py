"""The host tools the tests drive, installed with apt when missing (as root), as
tests/kernel/vmsetup.py installs qemu: the README's test command then skips nothing on a fresh
machine."""

from __future__ import annotations

import os
import shutil

# command -> the Debian package that provides it
TOOLS = {
    "tar": "tar",
    "bsdtar": "libarchive-tools",
    "isoinfo": "genisoimage",
    "genisoimage": "genisoimage",
    "xorriso": "xorriso",
    "setfattr": "attr",
    "strace": "strace",
    "script": "bsdutils",
    "ecryptfs-wrap-passphrase": "ecryptfs-utils",
    "man": "man-db",
    "growisofs": "growisofs",
    "wodim": "wodim",
}


def missing() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def ensure() -> list[str]:
    """Install what is missing when we may (root with apt-get); returns what is still missing.
    Raises tests.kernel.vmsetup.VmUnavailable when apt fails."""
    absent = missing()
    if absent and os.geteuid() == 0 and shutil.which("apt-get"):
        from tests.kernel.vmsetup import apt_install

        apt_install(sorted({TOOLS[tool] for tool in absent}))
        absent = missing()
    return absent
