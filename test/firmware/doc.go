// Package firmware boots Nimbus through UEFI firmware in real guests:
// Debian's CLOUDHV.fd (Cloud Hypervisor's edk2 platform) from a GPT disk,
// through GRUB, to Linux. It is its own package because these boots are
// the ones most often seen to take the nested sandbox down: the L1 kernel
// (a stack guard page hit in its vCPU thread), and the sandbox's QEMU,
// whose TCG aborts when edk2 writes CR8 on its way out of an interrupt
// while L1's KVM waits for an interrupt window (see TestDebianUEFI in
// test/distro); the sandbox then reruns only this short package.
package firmware
