#!/usr/bin/env bash
# The Debian 12 machine the boot test installs chatsys on, built once and cached: a fresh
# server (minbase, systemd, the cloud kernel, OpenSSH) plus the packages docs/systemd.md
# tells a user to install, as a raw ext4 image with its kernel, initrd and an SSH key for
# root. Also a wheelhouse of requirements.lock, so pip needs no network inside the machine.
# Prints the paths as KEY=VALUE lines. Needs root (debootstrap) and Debian's mirror once.
set -euo pipefail
usage() {
    echo "usage: $0 [--rebuild]   (env: CHATSYS_CACHE, VM_CACHE, DEBIAN_MIRROR, VM_IMAGE_SIZE, VENV)"
    echo "  prints image=, kernel=, initrd=, ssh_key=, wheels= for the cached machine (built when missing)"
}
source "$(dirname "$0")/lib/common.sh"

rebuild=false
case ${1:-} in
    --rebuild) rebuild=true ;;
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

VM_CACHE=${VM_CACHE:-$CHATSYS_CACHE/vm}
VM_IMAGE_SIZE=${VM_IMAGE_SIZE:-3G}
# What a fresh Debian server has (init, udev, the kernel, an SSH server, sudo, ip) and what
# docs/systemd.md's `apt-get install` line adds. Nothing else: the install must bring the rest.
server_packages=systemd-sysv,udev,linux-image-cloud-amd64,openssh-server,sudo,iproute2
documented_packages=haproxy,prometheus,prometheus-node-exporter,python3-venv,git,curl

hash_of() { sha256sum | cut -c1-12; }

debian_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local found
    found=$(awk '$1 == "URIs:" && $2 ~ /^https?:/ && $2 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n $found ]] || found=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${found:-http://deb.debian.org/debian}"
}

# The image depends on this script (packages, configuration) and nothing else.
image_dir=$VM_CACHE/debian12-$(hash_of < "${BASH_SOURCE[0]}")

build_image() {
    ((EUID == 0)) || die "building the VM image needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup.sh installs it)"
    local work mirror root
    mkdir -p "$VM_CACHE/debs"
    work=$(mktemp -d "$VM_CACHE/.build-XXXXXX")
    # Whatever happens, no half-built root is left behind.
    trap 'rm -rf "$work"' EXIT
    root=$work/root
    mirror=$(debian_mirror)
    log "building the Debian 12 VM image from $mirror (once; a few minutes)"
    debootstrap --variant=minbase --cache-dir="$VM_CACHE/debs" \
        --include="$server_packages,$documented_packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed; its log: $(tail -n 20 "$work/debootstrap.log")"

    echo chatsys-vm > "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tchatsys-vm\n' > "$root/etc/hosts"
    printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' > "$root/etc/fstab"
    # The one network card, configured by DHCP from QEMU's user-mode network.
    cat > "$root/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
EOF
    systemctl --root="$root" --quiet enable systemd-networkd.service ssh.service
    # Root logs in over SSH with a key made for this image (OpenSSH's default allows keys only).
    ssh-keygen -q -t ed25519 -N '' -C chatsys-vm -f "$work/id_ed25519"
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"

    # QEMU boots the image's own kernel and initrd directly (-kernel, -initrd): no boot loader.
    local kernels=("$root"/boot/vmlinuz-*) initrds=("$root"/boot/initrd.img-*)
    [[ -f ${kernels[-1]} && -f ${initrds[-1]} ]] || die "debootstrap installed no kernel and initrd"
    cp "${kernels[-1]}" "$work/vmlinuz"
    cp "${initrds[-1]}" "$work/initrd.img"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
    mkfs.ext4 -q -F -L chatsys-root -d "$root" "$work/root.img" "$VM_IMAGE_SIZE" >/dev/null
    rm -rf "$root" "$work/debootstrap.log"
    rm -rf "$image_dir"
    mv "$work" "$image_dir"
    trap - EXIT
    # Earlier recipes' images are of no further use.
    find "$VM_CACHE" -maxdepth 1 -name 'debian12-*' ! -path "$image_dir" -exec rm -rf {} +
    log "VM image ready in $image_dir"
}

# build_wheels: every wheel requirements.lock needs, for the machine's Python 3.11 on x86-64.
build_wheels() {
    local wheels=$1 work
    [[ -x $VENV/bin/pip ]] || die "no $VENV; scripts/setup.sh builds it"
    work=$(mktemp -d "$VM_CACHE/.wheels-XXXXXX")
    log "downloading the wheels of requirements.lock (once per requirements.lock)"
    download_wheels "$work" || { rm -rf "$work"; die "pip download failed"; }
    rm -rf "$wheels"
    mv "$work" "$wheels"
    find "$VM_CACHE" -maxdepth 1 -name 'wheels-*' ! -path "$wheels" -exec rm -rf {} +
}

mkdir -p "$VM_CACHE"
if $rebuild || [[ ! -f $image_dir/root.img ]]; then build_image; fi
wheels=$VM_CACHE/wheels-$(hash_of < "$CHATSYS_ROOT/requirements.lock")
if $rebuild || [[ ! -d $wheels ]]; then build_wheels "$wheels"; fi

echo "image=$image_dir/root.img"
echo "kernel=$image_dir/vmlinuz"
echo "initrd=$image_dir/initrd.img"
echo "ssh_key=$image_dir/id_ed25519"
echo "wheels=$wheels"
