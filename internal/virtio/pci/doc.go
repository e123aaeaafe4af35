// Package pci is the virtio-pci modern transport (virtio 1.2 §4.1) with
// Cloud Hypervisor's layout: one 64-bit BAR holding the common
// configuration, ISR, device configuration, notification area, MSI-X
// table and PBA; vendor 0x1af4, device 0x1040+type, revision 1; one MSI-X
// vector per queue plus one for configuration changes.
//
// A *Device is a devices/pci Function: the VM adds it to a pci.Root, then
// registers each NotifyAddresses entry as a KVM ioeventfd (notify writes
// that reach the transport instead signal the queue's eventfd, so both
// paths look the same to the device). On DRIVER_OK the transport calls
// virtio.Device.Activate with the queues and an Interrupt backed by the
// MSI-X vectors; on a status write of 0 it resets the device.
package pci
