package vm

import (
	"errors"
	"io"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/acpi"
	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devices/ged"
	"github.com/nimbus-vmm/nimbus/internal/devices/legacy"
	"github.com/nimbus-vmm/nimbus/internal/devices/pcihp"
	"github.com/nimbus-vmm/nimbus/internal/devices/serial"
	"github.com/nimbus-vmm/nimbus/internal/devmgr"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// Legacy device placement (upstream device_manager.rs).
const (
	serialBase = 0x3f8
	serialLen  = 8
	serialIRQ  = 4
)

// Device ids in vm.info's device_tree (upstream's names).
const (
	idSerial       = "__serial"
	idI8042        = "__i8042"
	idCMOS         = "__cmos"
	idPost         = "__debug_port"
	idFwDebug      = "__fw_debug"
	idDebugConsole = "__debug_console"
	idACPIShutdown = "__acpi_shutdown"
	idPMTimer      = "__acpi_pm_timer"
	// Platform nodes, not shown in device_tree.
	idGED        = "__ged"
	idPCIHotplug = "__pci_hotplug"
	idCPUHotplug = "__cpu_hotplug"
	idMemHotplug = "__memory_hotplug"
	idPCIConfig  = "__pci_config"
)

// requestExit turns a device's exit request into a machine exit.
func (m *VM) requestExit(r devices.ExitReason) {
	reason := vmm.ExitPoweroff
	if r == devices.ExitReset {
		reason = vmm.ExitReset
	}
	m.log.Info("guest requested exit", "reason", r.String())
	m.haltGuest()
	vmm.NotifyExit(m.exits, vmm.MachineExit{Reason: reason})
}

// edgeIRQ is an edge-triggered line on the in-kernel irqchip: a trigger
// raises then lowers it.
func (m *VM) edgeIRQ(line uint32) devices.IRQ {
	return devices.IRQFunc(func() error {
		if err := m.kvm.IRQLine(line, true); err != nil {
			return err
		}
		return m.kvm.IRQLine(line, false)
	})
}

// addDevice registers a device that sits at one bus range: id's node in
// the device manager holds the range (and irq, the legacy line it raises).
func (m *VM) addDevice(id string, kind devmgr.Kind, dev bus.Device, pio bool, base, size uint64, irq ...uint32) error {
	tx, err := m.dm.Begin(id, kind)
	if err != nil {
		return wrap(ErrSetup, err)
	}
	if pio {
		err = tx.PIO(dev, base, size)
	} else {
		err = tx.MMIO(dev, base, size)
	}
	if err != nil {
		return wrap(ErrSetup, errors.Join(err, tx.Abort()))
	}
	for _, n := range irq {
		tx.IRQ(n)
	}
	if err := tx.Commit(dev); err != nil {
		return wrap(ErrSetup, err)
	}
	return nil
}

func (m *VM) insertPIO(id string, dev bus.Device, base, size uint64, irq ...uint32) error {
	return m.addDevice(id, devmgr.Legacy, dev, true, base, size, irq...)
}

// setupDevices creates the buses and the legacy devices, the serial port
// and debug port on cons's backends.
func (m *VM) setupDevices(cfg *config.VmConfig, cons *console.Devices) error {
	exit := devices.ExitFunc(m.requestExit)

	// COM1 exists unless --serial off, as upstream.
	if cfg.Serial.Mode != config.ConsoleOff {
		var out io.Writer
		if b := cons.Serial; b != nil {
			out = b
		}
		uart := serial.New(m.edgeIRQ(serialIRQ), out)
		if err := m.insertPIO(idSerial, uart, serialBase, serialLen, serialIRQ); err != nil {
			return err
		}
		if b := cons.Serial; b != nil {
			b.Start(uart)
		}
	}

	below, above := uint64(0), uint64(0)
	for _, r := range x86.RAMRegions(m.ramSize) {
		if r.Start < x86.RAM64BitStart {
			below += r.Size
		} else {
			above += r.Size
		}
	}
	m.post = legacy.NewPostPort(time.Now(), m.log)
	pio := []struct {
		id         string
		dev        bus.Device
		base, size uint64
	}{
		{idI8042, legacy.NewI8042(exit), legacy.I8042Base, legacy.I8042Len},
		{idCMOS, legacy.NewCMOS(below, above, exit), legacy.CMOSBase, legacy.CMOSLen},
		{idPost, m.post, legacy.POSTPort, legacy.POSTLen},
		{idFwDebug, legacy.NewFwDebug(nil), legacy.FwDebugPort, legacy.FwDebugLen},
		{idACPIShutdown, legacy.NewACPIShutdown(exit), legacy.ACPIShutdownBase, legacy.ACPIShutdownLen},
		{idPMTimer, legacy.NewPMTimer(), legacy.PMTimerBase, legacy.PMTimerLen},
	}
	for _, d := range pio {
		if err := m.insertPIO(d.id, d.dev, d.base, d.size); err != nil {
			return err
		}
	}

	// The ACPI GED carries vm.power-button to the guest (upstream's
	// AcpiGedDevice); acpi.Config.GED puts its AML in the DSDT.
	m.ged = ged.New(m.edgeIRQ(ged.IRQ))
	if err := m.addDevice(idGED, devmgr.Platform, m.ged, false, ged.Base, ged.Size, ged.IRQ); err != nil {
		return err
	}
	// Upstream's DeviceManager registers (PCIU/PCID/B0EJ/PSEG) that the
	// DSDT's PHPR device drives; ejects come back through hp.
	var err error
	if m.hp.regs, err = pcihp.NewSegments(numPCISegments(cfg), m.guestEjected); err != nil {
		return wrap(ErrSetup, err)
	}
	m.hp.regs.SetLogger(m.log)
	if err := m.addDevice(idPCIHotplug, devmgr.Platform, m.hp.regs, false, pcihp.Base, pcihp.Size); err != nil {
		return err
	}

	if dc := cfg.DebugConsole; dc.Mode != config.ConsoleOff {
		var out io.Writer
		if b := cons.Debug; b != nil {
			out = b
		}
		base := uint64(legacy.DebugConsoleBase)
		if dc.IOBase != nil {
			base = uint64(*dc.IOBase)
		}
		if err := m.insertPIO(idDebugConsole, legacy.NewDebugConsole(out), base, legacy.DebugConsoleLen); err != nil {
			return err
		}
	}
	return nil
}

// writeTables writes the ACPI tables (RSDP at 0xa0000) and the MP table.
func (m *VM) writeTables() error {
	if _, err := acpi.Build(m.mem, m.tables); err != nil {
		return wrap(ErrSetup, err)
	}
	if err := x86.WriteMPTable(m.mem, min(m.tables.BootCPUs, x86.MaxMPCPUs)); err != nil {
		return wrap(ErrSetup, err)
	}
	return nil
}
