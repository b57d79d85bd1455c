"""`ecarchive mount`: SOURCE seen as an eCryptfs lower tree through a read-only FUSE mount.

The second front end on the format package (the first is `create`): the same names, headers,
extents and key sources, served on demand instead of streamed.

* `names.py` — lower name ↔ plaintext name, one spelling per name;
* `keys.py` — key material per plaintext inode, fixed while the file is unchanged;
* `lowerfile.py` — the lower bytes of one open file at any offset (header, then extents);
* `view.py` — the tree: lookups through directory descriptors, attributes, listings, links;
* `fs.py` — the mfusepy adapter (the only module that imports FUSE);
* `readahead.py` — 1 MiB kernel read-ahead on the mount, where permitted;
* `run.py` — checks, background/foreground, signals, umount.

Only `fs.py` and `run.py` need the optional `mount` extra (mfusepy + libfuse).
"""
