package pci

// Resource is one entry of a device_tree node's "resources", serialized
// as upstream's externally tagged vm-device Resource enum, e.g.
// {"PciBar":{"index":0,"base":3221225472,"size":524288,"type_":"Mmio64","prefetchable":false}}.
// Exactly one field is set.
type Resource struct {
	PciBar *PciBarResource `json:"PciBar,omitempty"`
	MsiIrq *MsiIrqResource `json:"MsiIrq,omitempty"`
}

// PciBarResource is Resource::PciBar.
type PciBarResource struct {
	Index        int     `json:"index"`
	Base         uint64  `json:"base"`
	Size         uint64  `json:"size"`
	Type         BARType `json:"type_"`
	Prefetchable bool    `json:"prefetchable"`
}

// MsiIrqResource is Resource::MsiIrq; Type is "PciMsi", "PciMsix" or "GenericMsi".
type MsiIrqResource struct {
	Type string `json:"ty"`
	Base uint32 `json:"base"`
	Size uint32 `json:"size"`
}

// BARResources describes fn's BARs as upstream's virtio-pci device node
// lists them (one PciBar per BAR, in index order).
func BARResources(fn Function) []Resource {
	var out []Resource
	for _, b := range fn.BARs() {
		out = append(out, Resource{PciBar: &PciBarResource{
			Index: b.Index, Base: b.Base, Size: b.Size, Type: b.Type, Prefetchable: b.Prefetchable,
		}})
	}
	return out
}
