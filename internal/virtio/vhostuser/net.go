package vhostuser

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	vnet "github.com/nimbus-vmm/nimbus/internal/virtio/net"
)

// NewNet is upstream's vhost-user-net (virtio-devices/src/vhost_user/net.rs)
// for one queue pair, in client mode: the back end listening on
// cfg.VhostSocket (DPDK's vhost PMD, OVS-DPDK, ...) moves the packets;
// the MAC in the config space is the front end's (cfg.MAC, or a random
// locally administered one, returned for the config). The offloads are
// offered as upstream's offload_csum/tso/ufo say, where the back end has
// them. Multiqueue (a control queue served here), the MTU and server
// mode are refused by the VM before this is called.
func NewNet(cfg config.NetConfig, ram RAM, h *Handover, log *slog.Logger) (*Device, string, error) {
	mac := cfg.MAC
	if mac == "" {
		var err error
		if mac, err = config.RandomMAC(); err != nil {
			return nil, "", err
		}
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, "", fmt.Errorf("mac %q: %w", mac, virtio.ErrInvalid)
	}
	features := vnet.FMrgRxbuf | DefaultFeatures
	if cfg.OffloadCsum {
		features |= vnet.FCsum | vnet.FGuestCsum
		if cfg.OffloadTSO {
			features |= vnet.FHostECN | vnet.FHostTSO4 | vnet.FHostTSO6 | vnet.FGuestECN | vnet.FGuestTSO4 | vnet.FGuestTSO6
		}
		if cfg.OffloadUFO {
			features |= vnet.FHostUFO | vnet.FGuestUFO
		}
	}
	nc := vnet.Config{MaxVirtqueuePairs: 1}
	copy(nc.MAC[:], hw)
	cs, _ := nc.MarshalBinary()
	d, err := New(Spec{
		Name: "vhost-user-net", Type: virtio.TypeNet, QueueSizes: []uint16{cfg.QueueSize, cfg.QueueSize},
		Features: features, FrontendFeatures: vnet.FMAC, Config: cs,
	}, cfg.VhostSocket, ram, h, log)
	if err != nil {
		return nil, "", err
	}
	return d, hw.String(), nil
}
