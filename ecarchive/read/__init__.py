"""The read side, the mirror of create: archive members → decrypted entries → DEST or a report.

    members.py  a tar or ISO file, '-', an extracted tree or a mounted disc → lower entries
                (paths below the lower root, data readers), the layout decision, the manifest
    decode.py   lower entries → plaintext entries: keys, names, file contents; the passphrase
                is judged over the archive, damage costs one entry
    restore.py  plaintext entries → DEST, hashed and checked against the manifest
    dest.py     what restore makes in DEST, reached only through directory fds (fsio's)
    select.py   PATH / --include / --exclude
    listing.py  `list`
    spool.py    a member kept compressed until the archive's end (the manifest)
    verify.py   `verify`: members.py's lower entries and side files → hashes, names,
                headers, SOURCE, then the manifest

Every eCryptfs fact (marker, header, sizes, names) comes from `ecarchive.ecryptfs`.
"""
