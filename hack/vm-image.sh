#!/usr/bin/env bash
# vm-image.sh: builds the end-to-end test's VM, a Debian 13 (trixie) disk
# with systemd, cgroup v2, docker.io 26 and fuse3 (what most users run), and
# prints the directory holding it: disk.img (ext4, made by mkfs.ext4 -d, no
# loop devices), vmlinuz and initrd.img. Built once per recipe (the
# functions below, the packages, the mirror) and cached under
# /var/cache/ol-shim-vm/<hash>; e2e/ boots it with QEMU (hack/vmexec is its
# docker exec). Needs root and the network to Debian's mirror the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
mirror=$(hack/apt-mirror.sh)
packages=systemd,systemd-sysv,dbus,udev,kmod,linux-image-amd64,docker.io,docker-cli,fuse3,busybox-static,ca-certificates,make,procps,e2fsprogs
cache=/var/cache/ol-shim-vm

log() { echo "vm-image: $*" >&2; }

# configure ROOT: make the debootstrapped ROOT boot headless, quickly and
# without network, and start the exec agent from the 9p share.
configure() {
	local root=$1 u
	echo ol-shim-vm >"$root/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 ol-shim-vm\n' >"$root/etc/hosts"
	echo '# / is mounted by the initrd' >"$root/etc/fstab"
	chroot "$root" passwd -d root >/dev/null
	# Nothing that waits for a person, the network or a timer.
	for u in systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
		e2scrub_reap.service fstrim.timer dpkg-db-backup.timer systemd-random-seed.service \
		systemd-pstore.service modprobe@drm.service getty@tty1.service serial-getty@ttyS0.service; do
		ln -sf /dev/null "$root/etc/systemd/system/$u"
	done
	# dockerd as on the project's other hosts: no bridge, no iptables.
	mkdir -p "$root/etc/docker"
	echo '{ "bridge": "none", "iptables": false, "ip6tables": false }' >"$root/etc/docker/daemon.json"
	# The exec agent comes with each run, on the 9p share.
	cat >"$root/etc/systemd/system/ol-vmexec.service" <<'UNIT'
[Unit]
Description=the end-to-end test's exec agent (hack/vmexec, from the 9p share)
After=systemd-modules-load.service local-fs.target
[Service]
ExecStartPre=/sbin/modprobe -a 9pnet_virtio 9p virtio_console
ExecStartPre=/bin/mkdir -p /mnt/share
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none share /mnt/share
ExecStart=/mnt/share/vmexec /dev/virtio-ports/ol.exec
Restart=always
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
	ln -sf /etc/systemd/system/ol-vmexec.service "$root/etc/systemd/system/multi-user.target.wants/ol-vmexec.service"
	chroot "$root" apt-get clean
	rm -rf "$root/var/lib/apt/lists/"* "$root/var/log/"*.log "$root/boot/initrd.img-"*
}

# initrd ROOT OUT: a busybox initrd that loads virtio_blk and ext4 and
# switches to /dev/vda (Debian's own initrd is 36 MB and slower to boot).
initrd() {
	local root=$1 out=$2 k s m f mods="crc32c_generic crc16 mbcache jbd2 ext4 virtio_blk"
	k=$(ls "$root/usr/lib/modules" | head -1)
	s=$root/tmp/initrd
	rm -rf "$s"
	mkdir -p "$s/bin" "$s/lib/modules" "$s/proc" "$s/dev" "$s/newroot"
	cp "$root/usr/bin/busybox" "$s/bin/busybox"
	for m in $mods; do
		f=$(find "$root/usr/lib/modules/$k/kernel" -name "$m.ko*" | head -1)
		[ -n "$f" ] || continue
		case $f in *.xz) xz -dc "$f" ;; *.zst) zstd -qdc "$f" ;; *) cat "$f" ;; esac >"$s/lib/modules/$m.ko"
	done
	cat >"$s/init" <<INIT
#!/bin/busybox sh
B=/bin/busybox
\$B mount -t proc proc /proc; \$B mount -t devtmpfs dev /dev
for m in $mods; do \$B insmod /lib/modules/\$m.ko 2>/dev/null; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 1000 ]; do \$B usleep 10000; i=\$((i+1)); done
\$B mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; \$B sh; }
\$B umount /proc; \$B umount /dev
exec \$B switch_root /newroot /sbin/init
INIT
	chmod 755 "$s/init"
	(cd "$s" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out"
	rm -rf "$s"
}

need=
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v qemu-img >/dev/null || need="$need qemu-utils"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v cpio >/dev/null || need="$need cpio"
if [ -n "$need" ]; then
	log "installing$need"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

sum=$( (declare -f configure initrd; echo "trixie $mirror $packages") | sha256sum | cut -c1-16)
dir=$cache/$sum
if [ ! -s "$dir/disk.img" ]; then
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	log "debootstrap trixie into $tmp (a few minutes; log: $cache/debootstrap.log)"
	if ! debootstrap --variant=minbase --include="$packages" trixie "$tmp/root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
		tail -20 "$cache/debootstrap.log" >&2
		exit 1
	fi
	configure "$tmp/root"
	cp "$tmp/root/boot/"vmlinuz-* "$tmp/vmlinuz"
	initrd "$tmp/root" "$tmp/initrd.img"
	truncate -s 8G "$tmp/disk.img"
	mkfs.ext4 -q -F -L ol-shim-vm -d "$tmp/root" "$tmp/disk.img"
	rm -rf "$tmp/root"
	mkdir -p "$dir"
	mv "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/disk.img" "$dir/"
	# Images of older recipes are not needed any more.
	find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$sum" ! -name 'build.*' -exec rm -rf {} +
	log "built $dir"
fi
echo "$dir"
