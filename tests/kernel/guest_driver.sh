# Guest-side job loop (dash, chrooted into the host root), sourced by the generated driver.sh,
# which then calls `run_job NAME TIMEOUT [IMAGEn=/dev/vdX...]` once per job. Builtins wherever
# possible: under TCG every exec costs ~0.1-0.3 s and this runs between every pair of jobs.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home LANG=C.UTF-8 LC_ALL=C.UTF-8
uptime_to() {
    read -r up _ < /proc/uptime
    echo "$up" > "$1"
}

say() {
    read -r up _ < /proc/uptime
    echo "ECARCHIVE-VM: ${up}s $*"
}

mkdir -p "$HOME" /tmp/scratch
mount -t ext4 /dev/vda /tmp/scratch || echo "ECARCHIVE-VM: no scratch disk"
# The host's /tmp, which the guest's own tmpfs hides, where a virtualenv running the tests may
# live: / bound alone (not recursively) is the host root without the mounts on top of it.
mkdir -p /run/host-root
mount --bind / /run/host-root || echo "ECARCHIVE-VM: no /run/host-root"
dmesg -c > /tmp/job/boot-dmesg.txt
say "driver ready"

run_job() {
    name=$1 limit=$2
    shift 2
    dir=/tmp/job/jobs/$name
    say "job $name"
    mkdir -p "/tmp/scratch/$name" "/tmp/t/$name"
    uptime_to "$dir/started"
    (
        cd "$dir" || exit 125
        export JOB="$dir" SCRATCH="/tmp/scratch/$name" TMPD="/tmp/t/$name"
        for image in "$@"; do export "${image?}"; done
        exec timeout -k 5 "$limit" sh -eu -c '. /tmp/job/lib.sh; . ./script.sh'
    ) > "$dir/log.txt" 2>&1
    echo $? > "$dir/rc"
    uptime_to "$dir/ended"
    # Undo what the job left behind so the next one starts clean: its mounts (deepest first:
    # /proc/mounts lists parents before children) and every key it added.
    leftover=
    while read -r _ point _; do
        case $point in /tmp/t/*|/tmp/scratch/?*) leftover="$point $leftover" ;; esac
    done < /proc/mounts
    for point in $leftover; do umount -l "$point"; done
    keyctl clear @s > /dev/null 2>&1
    keyctl clear @u > /dev/null 2>&1
    dmesg -c > "$dir/dmesg.txt"
}
