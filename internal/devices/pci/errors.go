package pci

import "errors"

// Error categories; match with errors.Is.
var (
	// ErrInvalid: a bad argument from the VMM (BAR size not a power of two,
	// BAR index out of range, capability too large, vector count out of range).
	ErrInvalid = errors.New("invalid PCI configuration")
	// ErrNoSlot: every device number on the bus is taken.
	ErrNoSlot = errors.New("no PCI device slot available")
	// ErrSlotInUse: the requested device number (pci_device_id) is taken.
	ErrSlotInUse = errors.New("PCI device slot already in use")
	// ErrNoSpace: a BAR does not fit in its MMIO window.
	ErrNoSpace = errors.New("no room for the PCI BAR in the MMIO window")
	// ErrNotFound: no device at that slot, or no allocation at that address.
	ErrNotFound = errors.New("PCI device or allocation not found")
)
