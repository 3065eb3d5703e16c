#!/bin/sh
# PID 1 of the dpu-emu Linux-host testbed guest (busybox ash).
# Mounts the pseudo file systems, loads the NVMe/TCP modules, configures the NIC statically
# (no default route), writes the host NQN/ID, runs /guest/run.sh from the appended cpio, prints
# the exit marker and powers off. It must never exit: PID 1 exiting panics the kernel.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TERM=dumb

BOOT_CONF=/etc/dpu-emu/boot.conf
GUEST_DIR=/guest
MARKER_PREFIX="@@DPU-EMU-GUEST-EXIT"
MARKER_SUFFIX="@@"
UART_DRAIN_SECONDS=1

say() { echo "dpu-emu-init: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo /sbin/modprobe > /proc/sys/kernel/modprobe

# shellcheck source=/dev/null
. "$BOOT_CONF"                       # BOOT_MODULES, GUEST_IP_CIDR, DEFAULT_HOST_ID
NONCE=none
HOST_ID=$DEFAULT_HOST_ID
# shellcheck source=/dev/null
[ -f "$GUEST_DIR/params" ] && . "$GUEST_DIR/params"   # NONCE, HOST_ID (validated by the host)

for module in $BOOT_MODULES; do
    modprobe "$module" || say "modprobe $module failed"
done
mount -t configfs configfs /sys/kernel/config || say "cannot mount configfs"

ip link set lo up
nic=""
for dev in /sys/class/net/*; do
    case "$(readlink "$dev/device/driver")" in
        */virtio_net) nic=${dev##*/}; break ;;
    esac
done
if [ -n "$nic" ]; then
    ip addr add "$GUEST_IP_CIDR" dev "$nic"
    ip link set "$nic" up
else
    say "no virtio-net interface found"
fi

mkdir -p /etc/nvme
echo "nqn.2014-08.org.nvmexpress:uuid:$HOST_ID" > /etc/nvme/hostnqn
echo "$HOST_ID" > /etc/nvme/hostid
hostname dpu-emu-host

if [ -f "$GUEST_DIR/run.sh" ]; then
    say "running guest script"
    (cd "$GUEST_DIR" && exec sh "$GUEST_DIR/run.sh")
    status=$?
else
    say "no $GUEST_DIR/run.sh in the initramfs"
    status=127
fi

if [ "$status" -ne 0 ]; then
    echo "---- dmesg (tail) ----"
    dmesg | tail -n 80
    echo "---- end of dmesg ----"
fi
sync
echo "$MARKER_PREFIX nonce=$NONCE status=$status$MARKER_SUFFIX"
sleep "$UART_DRAIN_SECONDS"
poweroff -f
# Not reached unless poweroff failed: sleep instead of exiting (PID 1 must not exit).
while :; do sleep 3600; done
