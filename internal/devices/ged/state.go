package ged

import (
	"encoding/json"
	"fmt"
)

// StateID implements devmgr.Stateful.
func (d *Device) StateID() string { return "ged/v1" }

// SaveState implements devmgr.Stateful: the notifications the guest has
// not read yet.
func (d *Device) SaveState() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return json.Marshal(struct{ Pending Notification }{d.pending})
}

// RestoreState implements devmgr.Stateful.
func (d *Device) RestoreState(b []byte) error {
	var s struct{ Pending Notification }
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("ged state: %w", err)
	}
	d.mu.Lock()
	d.pending = s.Pending
	d.mu.Unlock()
	return nil
}
