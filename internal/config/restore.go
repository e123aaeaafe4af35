package config

// Validate is upstream's RestoreConfig::validate against the snapshot's
// VmConfig: prefault and on-demand restore exclude each other, and every
// NIC that had tap fds must get as many new ones (net_fds naming no such
// NIC are ignored, as upstream).
func (r *RestoreConfig) Validate(vm *VmConfig) error {
	if r.MemoryRestoreMode == MemoryRestoreOnDemand && r.Prefault {
		return invalidf("prefault", "'prefault' cannot be combined with 'memory_restore_mode=ondemand'")
	}
	given := map[string]uint{}
	for _, n := range r.NetFds {
		if _, ok := given[n.ID]; ok {
			return dup("net_fds", "Identifier %s is not unique", n.ID)
		}
		given[n.ID] = n.NumFds
	}
	for _, nc := range vm.Net {
		if len(nc.Fds) == 0 {
			continue
		}
		n, ok := given[nc.ID]
		if !ok {
			return invalidf("net_fds", "Net id %s is associated with FDs and is required", nc.ID)
		}
		if int(n) != len(nc.Fds) {
			return invalidf("net_fds", "Number of Net FDs passed for '%s' during Restore: %d. Expected: %d", nc.ID, n, len(nc.Fds))
		}
	}
	return nil
}
