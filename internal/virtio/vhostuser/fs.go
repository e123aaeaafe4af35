package vhostuser

import (
	"encoding/binary"
	"log/slog"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// FsConfig is struct virtio_fs_config (include/uapi/linux/virtio_fs.h,
// virtio 1.2 §5.11.4): a NUL-padded tag and the request queue count.
type FsConfig struct {
	Tag              string
	NumRequestQueues uint32
}

// Sizes of struct virtio_fs_config.
const (
	FsTagSize    = 36
	FsConfigSize = FsTagSize + 4
)

// MarshalBinary encodes the config; a longer tag is cut at 36 bytes, as
// upstream does.
func (c FsConfig) MarshalBinary() ([]byte, error) {
	b := make([]byte, FsConfigSize)
	copy(b[:FsTagSize], c.Tag)
	binary.LittleEndian.PutUint32(b[FsTagSize:], c.NumRequestQueues)
	return b, nil
}

// NewFs is upstream's vhost-user-fs (virtio-devices/src/vhost_user/fs.rs):
// a high-priority queue plus cfg.NumQueues request queues of
// cfg.QueueSize, served by a virtiofsd listening on cfg.Socket; the config
// space carries the tag the guest mounts.
func NewFs(cfg config.FsConfig, ram RAM, h *Handover, log *slog.Logger) (*Device, error) {
	sizes := make([]uint16, 1+cfg.NumQueues)
	for i := range sizes {
		sizes[i] = cfg.QueueSize
	}
	c, _ := FsConfig{Tag: cfg.Tag, NumRequestQueues: uint32(cfg.NumQueues)}.MarshalBinary()
	return New(Spec{
		Name: "vhost-user-fs", Type: virtio.TypeFs, QueueSizes: sizes,
		Features: DefaultFeatures, Config: c,
	}, cfg.Socket, ram, h, log)
}
