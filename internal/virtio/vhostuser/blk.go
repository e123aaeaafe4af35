package vhostuser

import (
	"encoding/binary"
	"log/slog"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
)

// blkFeatures are upstream's vhost-user-blk avail_features (what a
// virtio-blk back end may offer, plus DefaultFeatures) less CONFIG_WCE:
// the guest's writes to the writeback field would need SET_CONFIG, which
// this front end does not send, so the cache mode is not offered as
// writable rather than silently kept.
const blkFeatures = blk.FSizeMax | blk.FSegMax | blk.FGeometry | blk.FRO | blk.FBlkSize | blk.FFlush |
	blk.FTopology | blk.FDiscard | blk.FWriteZeroes | DefaultFeatures

// blkNumQueuesOffset is virtio_blk_config.num_queues.
const blkNumQueuesOffset = 34

// NewBlk is upstream's vhost-user-blk (virtio-devices/src/vhost_user/blk.rs):
// cfg.NumQueues queues of cfg.QueueSize served by the back end at
// cfg.VhostSocket (qemu-storage-daemon, SPDK, ...), which also supplies
// the config space (GET_CONFIG); num_queues in it is Nimbus's count.
func NewBlk(cfg config.DiskConfig, ram RAM, h *Handover, log *slog.Logger) (*Device, error) {
	n := max(cfg.NumQueues, 1)
	sizes := make([]uint16, n)
	for i := range sizes {
		sizes[i] = cfg.QueueSize
	}
	features := uint64(blkFeatures)
	if n > 1 {
		features |= blk.FMQ
	}
	d, err := New(Spec{
		Name: "vhost-user-blk", Type: virtio.TypeBlock, QueueSizes: sizes,
		Features: features, ConfigSize: blk.ConfigSize,
	}, cfg.VhostSocket, ram, h, log)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint16(d.config[blkNumQueuesOffset:], uint16(n))
	return d, nil
}
