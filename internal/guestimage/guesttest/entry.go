package guesttest

import (
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/vm"
	"github.com/nimbus-vmm/nimbus/internal/vmm"
)

// TimeToFirstEntry builds and boots, in this process, a 1-vCPU machine
// with payload and memSize bytes of RAM (serial and console off) and
// returns the time from vm.New to the boot vCPU's first KVM_RUN: Nimbus's
// own share of a boot. The machine is shut down before it returns.
func TimeToFirstEntry(t testing.TB, payload config.PayloadConfig, memSize uint64) time.Duration {
	t.Helper()
	cfg := config.DefaultVmConfig()
	cfg.Payload = &payload
	cfg.Memory.Size = memSize
	cfg.Serial, cfg.Console = config.SerialConfig{Mode: config.ConsoleNull}, config.ConsoleConfig{Mode: config.ConsoleOff}
	start := time.Now()
	m, err := vm.New(&cfg, nil, make(chan vmm.MachineExit, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(); err != nil {
		t.Fatal(err)
	}
	<-m.Entered()
	d := time.Since(start)
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	return d
}
