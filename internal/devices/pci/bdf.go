package pci

import "fmt"

// BDF addresses one PCI function: segment, bus, device (slot) and function.
type BDF struct {
	Segment  uint16
	Bus      uint8
	Device   uint8
	Function uint8
}

// String formats the BDF as upstream's PciBdf Display does
// (pci/src/lib.rs): "{seg:04x}:{bus:02x}:{dev:02x}.{fn:x}", e.g. 0000:00:03.0.
func (b BDF) String() string {
	return fmt.Sprintf("%04x:%02x:%02x.%x", b.Segment, b.Bus, b.Device, b.Function)
}

// MarshalText makes a BDF serialize as its string form in JSON (pci_bdf).
func (b BDF) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// Uint32 packs the BDF as upstream's PciBdf(u32): segment<<16 | bus<<8 |
// device<<3 | function. KVM uses it as the MSI device id on some platforms.
func (b BDF) Uint32() uint32 {
	return uint32(b.Segment)<<16 | uint32(b.Bus)<<8 | uint32(b.Device&0x1f)<<3 | uint32(b.Function&7)
}
