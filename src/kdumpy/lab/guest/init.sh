#!/bin/sh
# kdumpy lab: /init of both the first and the capture kernel (busybox sh).
#
# The host writes what to do into plan.sh on the "out" 9p share; this script only carries it out
# and prints "KDUMPY-LAB: ..." markers on the console, from which the host judges each step.
# Anything bigger than busybox (kexec, python, makedumpfile, kdumpy) runs from the host's root,
# mounted read-only over 9p at /hostroot, through chroot.

export PATH=/bin
/bin/busybox --install -s /bin

say() { echo "KDUMPY-LAB: $*"; }
fail() {
	say "ERROR $*"
	sync
	poweroff -f
	sleep 10
}
# In the host root, with the guest's proc/sys/dev/tmp mounted over it.
on_host() { chroot /hostroot /bin/sh -c "$1"; }
ninep() { mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000$3" "$1" "$2"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

# The capture kernel is the one that exports the dead kernel's memory.
if [ -e /proc/vmcore ]; then ROLE=capture; else ROLE=first; fi
say "$ROLE kernel up $(uname -r)"

while read -r m; do
	insmod "/lib/modules/$m" || say "insmod $m failed"
done </lib/modules/order

ninep out /out "" || fail "cannot mount the out share"
[ -r /out/plan.sh ] || fail "no plan.sh on the out share"
. /out/plan.sh

ninep hostroot /hostroot ",ro" || fail "cannot mount the host root"
mount -t proc proc /hostroot/proc
mount -t sysfs sysfs /hostroot/sys
mount -t devtmpfs devtmpfs /hostroot/dev
# Project paths under /tmp or /run (a clone in /tmp) would vanish under the guest's tmpfs: hold
# them aside, then put them back at their host paths.
n=0
for p in $LAB_KEEP; do
	n=$((n + 1))
	mkdir -p "/keep/$n" && mount -o bind "/hostroot$p" "/keep/$n" || fail "cannot hold $p"
done
mount -t tmpfs tmpfs /hostroot/tmp
mount -t tmpfs tmpfs /hostroot/run
n=0
for p in $LAB_KEEP; do
	n=$((n + 1))
	mkdir -p "/hostroot$p" && mount -o bind "/keep/$n" "/hostroot$p" || fail "cannot keep $p"
done
# The out share appears in the host root at its host path, so host commands can name it (a path
# under /tmp or /run lies on the guest's tmpfs and must be made first).
mkdir -p "/hostroot$LAB_OUT_HOST" 2>/dev/null
mount -o bind /out "/hostroot$LAB_OUT_HOST" || fail "cannot bind the out share at $LAB_OUT_HOST"

if [ "$ROLE" = capture ]; then
	say "capture $(grep MemTotal /proc/meminfo | tr -s ' ')"
	if [ -n "$LAB_CAPTURE_CMD" ]; then
		on_host "$LAB_CAPTURE_CMD"
		rc=$?
	else
		# 1 MiB blocks: busybox cp writes 4 KiB at a time, several times slower over 9p.
		dd if=/proc/vmcore of=/out/vmcore.part bs=1M 2>/tmp/dd.log
		rc=$?
		[ $rc = 0 ] && mv /out/vmcore.part /out/vmcore
		tail -n 1 /tmp/dd.log
	fi
	sync
	say "capture done rc=$rc"
	poweroff -f
	sleep 10
fi

case "$LAB_MODE" in
probe)
	say "probe ok"
	poweroff -f
	sleep 10
	;;
esac

for kv in $LAB_SYSCTLS; do
	sysctl -w "$kv" >/dev/null || fail "sysctl -w $kv"
done

if [ -n "$LAB_DISK" ]; then
	mkdir -p /hostroot/tmp/disk
	mount -t ext4 /dev/vda /hostroot/tmp/disk || fail "cannot mount the ext4 disk"
fi

if [ -n "$LAB_ARM" ]; then
	on_host "$LAB_ARM" || fail "arming failed: $LAB_ARM"
	[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "kexec_crash_loaded is not 1 after arming"
	say "armed $(cat /sys/kernel/kexec_crash_size) bytes reserved"
fi

if [ -n "$LAB_WORKLOAD_CMD" ]; then
	on_host "$LAB_WORKLOAD_CMD" &
	n=0
	while [ ! -e /hostroot/tmp/kdumpy-lab-ready ]; do
		kill -0 $! 2>/dev/null || fail "the workload exited early"
		n=$((n + 1))
		[ $n -gt 600 ] && fail "the workload was not ready after 300 s"
		sleep 0.5
	done
	say "workload ready $(cat /hostroot/tmp/kdumpy-lab-ready)"
fi

if [ "$LAB_MODE" = idle ]; then
	say "idle"
	while true; do sleep 3600; done
fi

# A marker printed just before a panic can be lost: give the console a moment.
sleep 1
say "trigger $LAB_TRIGGER"
sleep 1
eval "$LAB_TRIGGER_CMD"
sleep "${LAB_TRIGGER_WAIT:-300}"
fail "trigger $LAB_TRIGGER did not crash the kernel"
