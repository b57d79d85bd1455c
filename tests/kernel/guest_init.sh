#!/bin/busybox sh
# /init of the oracle guest (busybox only). Loads the modules, mounts the host root read-only
# over 9p, the job share read-write inside it, then chroots into the host root and runs the
# driver script the host wrote to the job share. Always powers off: qemu runs with -no-reboot.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "ECARCHIVE-VM: $*" > /dev/console; }
finish() { sync; poweroff -f; sleep 10; }

if grep -q ecarchive.probe /proc/cmdline; then
    say "probe ok"
    finish
fi

while read -r module; do
    insmod "/modules/$module" 2> /dev/null || say "insmod $module failed (ignored)"
done < /modules/order

NINEP="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$NINEP,ro,cache=loose" hostroot /host || { say "cannot mount host root"; finish; }
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
mkdir /host/tmp/job
mount -t 9p -o "$NINEP,rw" jobs /host/tmp/job || { say "cannot mount job share"; finish; }
say "booted $(cut -d' ' -f1 /proc/uptime)s"
chroot /host /bin/sh /tmp/job/driver.sh > /dev/console 2>&1
say "driver exit $?"
finish
