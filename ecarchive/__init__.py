"""ecarchive: stream a plaintext tree as a tar or ISO image of eCryptfs lower files.

The Python API (see `ecarchive.api`): `create`, `restore`, `verify`, `list_archive`,
`image_sizes`; errors are `ecarchive.errors.EcarchiveError` subclasses with an exit code.
"""

__version__ = "0.1.0"

from .api import create, image_sizes, list_archive, restore, verify

__all__ = ["__version__", "create", "image_sizes", "list_archive", "restore", "verify"]
