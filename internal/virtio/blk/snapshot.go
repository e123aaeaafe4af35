package blk

import (
	"encoding/json"
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

var _ virtio.Snapshotter = (*Device)(nil)

// state is what a disk holds beyond the transport's state: the cache
// mode the driver chose (VIRTIO_BLK_F_CONFIG_WCE).
type state struct {
	Writeback uint8 `json:"writeback"`
}

// SaveSnapshot implements virtio.Snapshotter.
func (d *Device) SaveSnapshot() (json.RawMessage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return json.Marshal(state{Writeback: d.cfg.Writeback})
}

// RestoreSnapshot implements virtio.Snapshotter.
func (d *Device) RestoreSnapshot(b json.RawMessage) error {
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("block device state: %w: %w", virtio.ErrInvalid, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg.Writeback = s.Writeback & 1
	d.writeback.Store(d.cfg.Writeback == 1)
	return nil
}
