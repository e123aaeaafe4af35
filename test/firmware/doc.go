// Package firmware boots Nimbus through UEFI firmware in real guests:
// Debian's CLOUDHV.fd (Cloud Hypervisor's edk2 platform) from a GPT disk,
// through GRUB, to Linux. It is its own package because these boots are
// the ones most often seen to take the nested sandbox's L1 kernel down
// (a stack guard page hit in its vCPU thread); the sandbox then reruns
// only this short package.
package firmware
