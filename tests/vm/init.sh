#!/bin/busybox sh
# The guest's first process: mount the host's / read-only (9p) with fresh proc, sys, cgroup2
# and writable tmpfs places over it, run the job the host left in its share, then power off.
# The kernel is booted with cgroup_no_v1=all, so cgroup2 carries every controller.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for module in $(cat /modules.order); do
    insmod "/modules/$module" || echo "stratus-vm: insmod $module failed"
done

fail() {
    echo "stratus-vm: $*"
    poweroff -f
}

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose hostroot /host \
    || fail "cannot mount the host's root"
mount -t proc proc /host/proc || fail "no proc"
mount -t sysfs sysfs /host/sys || fail "no sysfs"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || fail "no cgroup2"
mount -t devtmpfs dev /host/dev || fail "no /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
# Not cached: what the job writes reaches the host at once, even if the guest then hangs.
mkdir -p /job /hosttmp
mount -t 9p -o trans=virtio,version=9p2000.L job /job || fail "cannot mount the job's share"
mount -o bind /host/tmp /hosttmp || fail "cannot keep the host's /tmp"
mount -t tmpfs -o mode=1777 tmp /host/tmp || fail "no /tmp"
# What the job needs from the host's /tmp (a checkout there, as CI's clone) at its own path.
if [ -f /job/keep ]; then
    while read -r path; do
        mkdir -p "/host$path" && mount -o bind "/hosttmp${path#/tmp}" "/host$path" \
            || fail "cannot show $path"
    done < /job/keep
fi
mount -t tmpfs -o mode=755 run /host/run || fail "no /run"
mkdir /host/run/job
mount -o bind /job /host/run/job || fail "cannot show the job's share"
ip link set lo up
hostname stratus-vm

chroot /host /bin/sh /run/job/job.sh > /host/run/job/output 2>&1
echo $? > /host/run/job/status
sync
poweroff -f
