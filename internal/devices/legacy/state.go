package legacy

import (
	"encoding/json"
	"fmt"
)

// cmosState is the CMOS index register and RAM, for snapshots (the clock
// registers are read from the host clock, not stored).
type cmosState struct {
	Index uint8
	Data  []byte
}

// StateID implements devmgr.Stateful.
func (c *CMOS) StateID() string { return "cmos/v1" }

// SaveState implements devmgr.Stateful.
func (c *CMOS) SaveState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return json.Marshal(cmosState{Index: c.index, Data: c.data[:]})
}

// RestoreState implements devmgr.Stateful.
func (c *CMOS) RestoreState(b []byte) error {
	var s cmosState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("cmos state: %w", err)
	}
	if len(s.Data) != len(c.data) {
		return fmt.Errorf("cmos state: %d bytes of RAM, want %d", len(s.Data), len(c.data))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = s.Index
	copy(c.data[:], s.Data)
	return nil
}
