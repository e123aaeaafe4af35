# Nimbus: every target a newcomer or CI needs. See README.md.
GO ?= go
BIN := bin
SANDBOX := $(GO) run ./cmd/nimbus-sandbox

# Packages whose tests need real KVM. `make test-kvm` runs them all in ONE
# sandbox boot (directly where /dev/kvm works, otherwise in a QEMU TCG guest
# with nested KVM). Append your package here: KVM_TEST_PKGS += ./internal/yours
KVM_TEST_PKGS := ./internal/kvm ./internal/memory ./internal/guestimage
KVM_TEST_PKGS += ./internal/vm ./test/e2e
KVM_TEST_PKGS += ./test/net
# ~4-5 min nested: about 40 guest boots, hotplug and vsock included
# (NIMBUS_LIFECYCLE_CYCLES raises the 3 boot/shutdown cycles).
KVM_TEST_PKGS += ./test/lifecycle
KVM_TEST_PKGS += ./test/devices
# UEFI boots through Debian's CLOUDHV.fd run in a sandbox boot of their
# own (test-kvm's second step): Linux booted through the firmware is the
# guest most often seen to take the nested sandbox's L1 kernel down (a
# stack guard page hit in its vCPU thread, about one boot in three), and a
# dead sandbox reruns what had not finished, within a budget per boot.
KVM_FIRMWARE_PKGS := ./test/firmware
# Debian with systemd from a disk (internal/debimage, built once with
# debootstrap into build/cache): a minute or two a boot nested, and the
# nested sandbox loses these long guests far more often than the busybox
# ones (a guest frozen in KVM_RUN during its memory setup, an L1 kernel
# that stops taking timer interrupts: about half of today's boots on the
# dev box), so they run in sandbox boots of their own with six tries each.
KVM_DISTRO_PKGS := ./test/distro

# What `make demo` runs where KVM works (in the sandbox otherwise): Nimbus
# boots the Debian kernel with a busybox initramfs (/nimbus/guest) and the
# guest's serial console is this terminal. DEMO_CMD=$(DEMO_QEMU) boots the
# same guest under QEMU/KVM instead, for comparison.
DEMO_QEMU = ls -l /dev/kvm; \
	$$NIMBUS_QEMU -M microvm -accel kvm -cpu host -m 256M -smp 1 -nographic -no-reboot \
	  -kernel /nimbus/guest/vmlinuz -initrd /nimbus/guest/initramfs \
	  -append "console=ttyS0 rdinit=/init panic=-1 reboot=t"
DEMO_NIMBUS = ls -l /dev/kvm; /nimbus/bin/nimbus --version; \
	/nimbus/bin/nimbus --kernel /nimbus/guest/vmlinuz --initramfs /nimbus/guest/initramfs \
	  --cmdline "console=ttyS0" --cpus boot=2 --memory size=512M --serial tty --console off \
	  --disk path=/nimbus/guest/initramfs,readonly=on,serial=demo-disk
DEMO_CMD ?= $(DEMO_NIMBUS)
DEMO_SCRIPT ?= echo "Hello from a Linux guest: $$(uname -sr), $$(nproc) vCPUs"; echo "virtio devices:"; for d in /sys/bus/virtio/devices/*; do echo "  $$(basename $$d) $$(readlink $$d/driver | xargs basename)"; done; cat /sys/block/vda/serial; echo

.PHONY: all build test test-unit test-kvm deps demo bench vet fmt kernel clean-cache lifecycle-demo

all: build

# CGO_ENABLED=0: a static binary. With cgo the net package links libc and
# every start pays the dynamic loader (~4 ms of nimbus's start-to-ping on
# the 2-core dev box, measured by `make bench`); nimbus resolves no names,
# so the pure-Go resolver loses nothing. The sandbox builds the same way.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Unit tests: no KVM needed (the sandbox's own tests boot QEMU once when it
# is installed).
test-unit:
	$(GO) test -count=1 ./...

# Fuzzing: every `func Fuzz…` in the repo, one after another, FUZZTIME
# each with one worker, then a table of executions, new inputs and corpus
# sizes (scripts/fuzz.sh; FUZZ=regex picks targets). Fails when a target
# crashed; go writes the input to testdata/fuzz/<Name>/ of its package.
FUZZTIME ?= 30s
.PHONY: fuzz
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) bash scripts/fuzz.sh

# KVM tier: every KVM_TEST_PKGS test binary in one sandbox boot, with
# NIMBUS_REQUIRE_KVM=1 so that nothing skips for lack of /dev/kvm. Six
# tries a test: on a bad nested day TestVirtioFs's guest took the L1
# kernel down in three boots running (stack guard page in the vCPU
# thread), after a boot that ran out of its package time under it (the
# lifecycle package alone needs more than 15 minutes nested). The main
# tier gets 60 of CI's 90 minutes: it ran out of 55 in CI after losing
# three tries, while the other two tiers take 15-20 minutes together.
test-kvm:
	$(SANDBOX) test -qemu -tries 6 -timeout 60m -pkg-timeout 25m -stall 2m -rerun-failed $(KVM_TEST_PKGS)
	$(SANDBOX) test -qemu -tries 6 -timeout 20m -pkg-timeout 5m -stall 2m -rerun-failed $(KVM_FIRMWARE_PKGS)
	$(SANDBOX) test -qemu -debian -tries 6 -timeout 30m -pkg-timeout 15m -stall 3m -rerun-failed $(KVM_DISTRO_PKGS)

# Every test: unit tests, then the KVM tier.
test: deps
	$(MAKE) test-unit test-kvm

# The Debian kernel is fetched here too, so that the unit tests that read
# its modules (internal/debimage's initramfs) run rather than skip.
deps:
	bash scripts/install-deps.sh
	$(SANDBOX) kernel

# Fetch (once) and show the Debian kernel the sandbox and guests use.
kernel:
	$(SANDBOX) kernel

# The demo guest: the Debian kernel and a busybox initramfs running DEMO_SCRIPT.
.PHONY: demo-image
demo-image: deps
	$(SANDBOX) image -o build/demo -script '$(DEMO_SCRIPT)'

demo: demo-image build
	$(SANDBOX) -qemu --file $(BIN):/nimbus/bin --file build/demo:/nimbus/guest -- sh -c '$(DEMO_CMD)'

# The VM lifecycle driven by nimbus-remote against a real guest (README).
# The upstream quick start's path: Debian's CLOUDHV.fd (fetched by
# install-deps) boots a GPT disk through GRUB to the demo guest, whose
# console is this terminal (firmware, GRUB and Linux all on the serial port).
DEMO_UEFI = /nimbus/bin/nimbus --kernel /nimbus/guest/CLOUDHV.fd --disk path=/nimbus/guest/disk.img \
	  --serial tty --console off --cpus boot=2 --memory size=512M
.PHONY: demo-uefi
demo-uefi: deps build
	$(SANDBOX) image -o build/demo-uefi -script '$(DEMO_SCRIPT)' -uefi 'console=ttyS0'
	$(SANDBOX) -qemu --file $(BIN):/nimbus/bin --file build/demo-uefi/disk.img:/nimbus/guest/disk.img \
	  --file build/firmware/CLOUDHV.fd:/nimbus/guest/CLOUDHV.fd -- sh -c '$(DEMO_UEFI)'

# A real distribution: debootstrap's Debian with systemd (built once into
# build/cache by internal/debimage) boots from a raw disk with
# root=/dev/vda; the test logs in as root on the serial console through a
# pty, runs commands and powers off. The console is this terminal.
.PHONY: demo-debian
demo-debian: deps build
	$(SANDBOX) test -qemu -debian -rerun-failed -timeout 30m -pkg-timeout 10m -env NIMBUS_SHOW_CONSOLE=1 -run 'TestDebianSerialLogin$$' ./test/distro

# Debian boot benchmark: the image of demo-debian from a fresh raw copy
# under Nimbus, QEMU/KVM q35 and QEMU/KVM microvm, alternating, in the
# sandbox; median time to the kernel, systemd, multi-user.target and the
# login prompt. Asserts nothing.
.PHONY: bench-debian
bench-debian: deps build
	$(SANDBOX) test -qemu -debian -timeout 40m -pkg-timeout 35m -run TestDebianBootTimes ./test/distro

lifecycle-demo: deps build
	$(SANDBOX) image -o build/lifecycle -stay -script 'while :; do echo tick; sleep 1; done'
	$(SANDBOX) -qemu --file $(BIN):/nimbus/bin --file build/lifecycle:/nimbus/guest \
	  --file scripts/lifecycle-demo.sh:/nimbus/lifecycle-demo.sh -- sh /nimbus/lifecycle-demo.sh

# How often a plain guest boot fails in the sandbox (nested KVM under
# QEMU's TCG): N boots in a row, the stalls described (scripts/nested-boots.sh).
# QEMU_TOO=1 alternates with QEMU/KVM boots of the same guest. Asserts nothing.
BOOTS ?= 12
.PHONY: nested-boots
nested-boots: demo-image build
	$(SANDBOX) -qemu --timeout 60m --file $(BIN):/nimbus/bin --file build/demo:/nimbus/guest \
	  --file scripts/nested-boots.sh:/nimbus/nested-boots.sh --env N=$(BOOTS) --env QEMU_TOO=$(QEMU_TOO) \
	  --env NIMBUS_ARGS='$(NIMBUS_ARGS)' -- sh /nimbus/nested-boots.sh

clean-cache:
	rm -rf build/cache build/sandbox build/demo build/demo-uefi

# Benchmarks (figures printed, nothing asserted): process start to the
# API answering vmm.ping and idle RSS of the real nimbus binary, then the
# API's ping latency/throughput beside the bare net/http floor.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x ./cmd/nimbus
	$(GO) test -run '^$$' -bench . ./internal/api

# Boot benchmark: Nimbus vs QEMU microvm on the same guest, alternating, in
# the sandbox (nested KVM when this machine has no /dev/kvm). Prints figures.
.PHONY: bench-boot
bench-boot:
	$(SANDBOX) test -qemu -run TestBootTimes ./test/e2e

# virtio-blk benchmark: the same dd workloads (sequential 1 MiB and 4 KiB,
# random 4 KiB, O_DIRECT) in the guest under Nimbus and under QEMU/KVM, in
# the sandbox. Prints IOPS, MiB/s and the ratio; asserts nothing.
# Nimbus's own time to the first vCPU entry with CLOUDHV.fd, 1 GiB and 8 GiB.
.PHONY: bench-firmware
bench-firmware: deps build
	$(SANDBOX) test -qemu -run TestFirmwareStartTimes ./test/firmware

.PHONY: bench-devices
bench-devices: build
	$(SANDBOX) test -qemu -run TestDiskBench ./test/devices

# Snapshot, restore and live-migration figures for 512 MiB and 2 GiB guests
# with three quarters of their RAM in use, in the sandbox. Asserts nothing.
.PHONY: bench-snapshot
bench-snapshot: build
	$(SANDBOX) test -timeout 30m -pkg-timeout 25m -env NIMBUS_SNAPSHOT_FIGURES=1 -run TestSnapshotRestoreFigures ./test/lifecycle

# virtio-fs benchmark: small files and one large file through the same
# Debian virtiofsd, Nimbus vs QEMU/KVM (vhost-user-fs-pci), in the sandbox.
.PHONY: bench-fs
bench-fs: build
	$(SANDBOX) test -qemu -timeout 30m -run TestFsBench ./test/devices

# Network benchmark: guest<->host TCP throughput (busybox nc + dd, both
# directions) over virtio-net on a tap, Nimbus vs QEMU/KVM microvm with
# userspace virtio-net (vhost=off), alternating, in the sandbox. Prints figures.
.PHONY: bench-net
bench-net:
	$(SANDBOX) test -qemu -run TestNetThroughput ./test/net

# A VM with a virtio disk and NIC booted by the CLI and by nimbus-remote
# (README "Disks and network"). The guest shows vda (serial, a direct write
# and read back) and eth0 (address, ping of the host's tap end).
DEVICES_DEMO_SCRIPT ?= echo "disks: $$(ls /sys/block | xargs)"; \
	echo "vda: serial=$$(cat /sys/block/vda/serial) sectors=$$(cat /sys/block/vda/size) ro=$$(cat /sys/block/vda/ro)"; \
	echo "vda block 0 (from the host): $$(head -c 19 /dev/vda)"; \
	echo "written-by-the-guest on $$(uname -r)" | dd of=/dev/vda bs=4096 seek=1 conv=sync oflag=direct 2>&1 | tail -1; \
	echo "vda block 1 read back: $$(dd if=/dev/vda bs=4096 skip=1 count=1 iflag=direct 2>/dev/null | tr -d \\000)"; \
	ip link set eth0 up; ip addr add 192.168.249.2/24 dev eth0; ip addr show eth0; \
	ping -c 3 -w 30 192.168.249.1

.PHONY: devices-demo
devices-demo: deps build
	$(SANDBOX) image -o build/devices -script '$(DEVICES_DEMO_SCRIPT)'
	$(SANDBOX) -qemu --file $(BIN):/nimbus/bin --file build/devices:/nimbus/guest \
	  --file scripts/devices-demo.sh:/nimbus/devices-demo.sh -- sh /nimbus/devices-demo.sh
