// Package boot loads an x86-64 guest payload into guest memory: an ELF
// vmlinux (or firmware) through the PVH boot ABI, or a bzImage through the
// Linux 64-bit boot protocol, in that order as Cloud Hypervisor's
// load_kernel tries them. It writes the kernel, initramfs, command line and
// the boot information structure (hvm_start_info or boot_params) at
// upstream's addresses and reports where the boot CPU must start.
package boot
