"""The eCryptfs on-disk format: pure functions and named constants, no I/O policy.

Each function cites the kernel (fs/ecryptfs/) or ecryptfs-utils function it mirrors.
"""
