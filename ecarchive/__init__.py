"""ecarchive: stream a plaintext tree as a tar or ISO image of eCryptfs lower files."""

__version__ = "0.1.0"
