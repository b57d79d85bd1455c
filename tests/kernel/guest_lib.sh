# Shell helpers sourced by every job script in the oracle guest (dash, chrooted into the host
# root). Each job runs with `set -eu` in its own directory $JOB on the job share, with:
#   $SCRATCH  an empty directory on the fresh ext4 disk (lower trees go here: xattrs work and
#             ext4's lost+found stays out of the view)
#   $TMPD     an empty directory on tmpfs (mount points)
#   $PYTHON   a python3 able to run $TREES (a copy of tests/support/trees.py, stdlib only)
#   $IMAGE0.. block devices of the job's read-only images, in the order given

# Add the passphrase key(s) to the user keyring, with an empty HOME so no ~/.ecryptfsrc salt
# applies. Usage: add_passphrase PASSPHRASE [--fnek]
add_passphrase() {
    printf '%s' "$1" | ecryptfs-add-passphrase ${2:-} - > /dev/null
}

# mount_ecryptfs LOWER UPPER OPTIONS: -i keeps the interactive mount.ecryptfs helper out.
mount_ecryptfs() {
    mkdir -p "$2"
    mount -i -t ecryptfs "$1" "$2" -o "$3"
}

# walk DIR OUT.json: the same snapshot the host takes of its source tree.
walk() {
    # -S: no site-packages scan; trees.py is stdlib only and this saves ~1 s per walk (TCG).
    "$PYTHON" -S "$TREES" snapshot "$1" > "$2"
}


# checkpoint NAME: move the kernel log so far to $JOB/dmesg-NAME.txt, so a job that checks
# several trees can attribute kernel complaints to each (JobResult.ecryptfs_dmesg(NAME)).
checkpoint() {
    dmesg -c > "$JOB/dmesg-$1.txt"
}
