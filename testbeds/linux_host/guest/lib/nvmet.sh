# Sets up the guest kernel's own NVMe/TCP target (nvmet) over configfs (busybox ash).
# Source it and call:
#   nvmet_setup SUBNQN ADDR IO_PORT DISCOVERY_PORT SIZE_MIB SERIAL
# Namespace 1 is a memory-backed null_blk disk with 512-byte blocks (discard on). The subsystem
# allows any host and is linked to two TCP ports: IO_PORT and DISCOVERY_PORT (nvmet answers
# discovery on every port; its log lists the subsystem at the port that was asked).

NVMET_CFS=/sys/kernel/config/nvmet
NULLB_CFS=/sys/kernel/config/nullb
NVMET_LBA_BYTES=512
NVMET_IO_PORT_ID=1
NVMET_DISC_PORT_ID=2
NVMET_DEVICE_WAIT_S=10

_nvmet_port() {   # ID ADDR SVCID SUBNQN
    _p=$NVMET_CFS/ports/$1
    mkdir "$_p" &&
        echo tcp > "$_p/addr_trtype" &&
        echo ipv4 > "$_p/addr_adrfam" &&
        echo "$2" > "$_p/addr_traddr" &&
        echo "$3" > "$_p/addr_trsvcid" &&
        ln -s "$NVMET_CFS/subsystems/$4" "$_p/subsystems/$4"
}

_nvmet_nullb() {   # SIZE_MIB: /dev/nullb0, memory backed
    _nb=$NULLB_CFS/nullb0
    mkdir "$_nb" &&
        echo 1 > "$_nb/memory_backed" &&
        echo "$1" > "$_nb/size" &&
        echo "$NVMET_LBA_BYTES" > "$_nb/blocksize" &&
        echo 1 > "$_nb/discard" &&
        echo 1 > "$_nb/power" || return 1
    _i=0
    while [ ! -b /dev/nullb0 ] && [ "$_i" -lt "$NVMET_DEVICE_WAIT_S" ]; do sleep 1; _i=$((_i + 1)); done
    [ -b /dev/nullb0 ]
}

_nvmet_subsystem() {   # NQN SERIAL DEVICE
    _s=$NVMET_CFS/subsystems/$1
    mkdir "$_s" &&
        echo 1 > "$_s/attr_allow_any_host" &&
        echo "$2" > "$_s/attr_serial" &&
        mkdir "$_s/namespaces/1" &&
        echo "$3" > "$_s/namespaces/1/device_path" &&
        echo 1 > "$_s/namespaces/1/enable"
}

nvmet_setup() {
    _nqn=$1; _addr=$2; _io=$3; _disc=$4; _mib=$5; _serial=$6
    if ! { modprobe null_blk nr_devices=0 && modprobe nvmet && modprobe nvmet-tcp; }; then
        echo "nvmet_setup: modprobe failed"; return 1
    fi
    if ! _nvmet_nullb "$_mib"; then echo "nvmet_setup: null_blk setup failed"; return 1; fi
    if ! _nvmet_subsystem "$_nqn" "$_serial" /dev/nullb0; then
        echo "nvmet_setup: subsystem setup failed"; return 1
    fi
    if ! { _nvmet_port "$NVMET_IO_PORT_ID" "$_addr" "$_io" "$_nqn" &&
           _nvmet_port "$NVMET_DISC_PORT_ID" "$_addr" "$_disc" "$_nqn"; }; then
        echo "nvmet_setup: port setup failed"; return 1
    fi
    echo "nvmet: $_nqn on $_addr:$_io and :$_disc, ns 1 = null_blk ${_mib} MiB"
}
