package vm

import (
	"fmt"

	"github.com/nimbus-vmm/nimbus/internal/config"
	hostconsole "github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
	"github.com/nimbus-vmm/nimbus/internal/virtio/console"
	"github.com/nimbus-vmm/nimbus/internal/virtio/rng"
)

// addVirtioDevices creates the virtio devices (the console on cons) in upstream's order, which
// fixes their slots: the virtio console (add_console_devices), then
// make_virtio_devices' block, net and rng. With default slots that gives
// 00:01.0 console, then the disks, the nets and the rng.
func (m *VM) addVirtioDevices(cfg *config.VmConfig, cons hostconsole.Backend) error {
	if cfg.Console.Mode != config.ConsoleOff && cons != nil {
		if err := m.addVirtio(config.IDConsole, console.New(cons), cfg.Console.PciCommon); err != nil {
			return err
		}
	}
	for i := range cfg.Disks {
		dc := &cfg.Disks[i]
		d, err := blk.New(*dc)
		if err != nil {
			return wrap(ErrSetup, fmt.Errorf("disk %s: %w", dc.ID, err))
		}
		if err := m.addVirtio(dc.ID, d, dc.PciCommon); err != nil {
			return err
		}
	}
	for i := range cfg.Net {
		nc := &cfg.Net[i]
		d, err := newNet(*nc)
		if err != nil {
			return wrap(ErrSetup, fmt.Errorf("net %s: %w", nc.ID, err))
		}
		if nc.Tap == "" && len(nc.Fds) == 0 {
			nc.Tap = d.TapName()
		}
		if nc.MAC == "" {
			nc.MAC = d.MAC()
		}
		if err := m.addVirtio(nc.ID, d, nc.PciCommon); err != nil {
			return err
		}
	}
	// The entropy device always exists, as upstream.
	d, err := rng.New(cfg.Rng)
	if err != nil {
		return wrap(ErrSetup, fmt.Errorf("rng: %w", err))
	}
	return m.addVirtio(config.IDRng, d, cfg.Rng.PciCommon)
}
