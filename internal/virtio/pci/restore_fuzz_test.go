package pci

import (
	"encoding/json"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	devpci "github.com/nimbus-vmm/nimbus/internal/devices/pci"
	"github.com/nimbus-vmm/nimbus/internal/virtio"
	"github.com/nimbus-vmm/nimbus/internal/virtio/rng"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// restoreRig is a virtio-rng function placed on a PCI root, as a VM
// restoring a snapshot builds it before RestoreState.
func restoreRig(t testing.TB, mem virtio.GuestMemory) *Device {
	t.Helper()
	d, err := rng.New(config.RngConfig{Src: "/dev/zero"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Device: d, Memory: mem, Router: &router{}})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	root, _ := devpci.NewRoot(devpci.RootConfig{MMIO: bus.NewMMIO(),
		Window32: devpci.NewAllocator(x86.Region{Start: 0xc000_0000, Size: 640 << 20}),
		Window64: devpci.NewAllocator(x86.Region{Start: 1 << 40, Size: 1 << 40})})
	if _, err := root.Add(tr, 3); err != nil {
		tr.Close()
		t.Fatal(err)
	}
	return tr
}

// FuzzRestoreState restores arbitrary JSON as a snapshot's virtio-pci
// state (configuration space, MSI-X table, common configuration, queue
// addresses and positions, the activated flag) onto a virtio-rng
// function whose guest RAM holds fuzzer bytes, then lets the restored
// device serve its queue. RestoreState must fail or leave a function that
// works and closes, never panic.
func FuzzRestoreState(f *testing.F) {
	tr := restoreRig(f, virtiotest.NewMem(virtiotest.FuzzMemSize))
	st, err := tr.SaveState()
	if err != nil {
		f.Fatal(err)
	}
	tr.Close()
	idle, _ := json.Marshal(st)
	st.Activated, st.Status, st.DriverFeatures = true, 0xf, virtio.CommonFeatures
	st.Queues[0] = QueueState{Size: 16, Ready: true, DescAddr: 0x1000, AvailAddr: 0x2000, UsedAddr: 0x3000, LastAvail: 3, NextUsed: 3}
	active, _ := json.Marshal(st)
	ram := make([]byte, 0x3000)
	ram[0x2002] = 5 // two chains after the restored position
	f.Add(idle, []byte(nil))
	f.Add(active, ram)
	st.Queues[0].LastAvail, st.Queues[0].Vector, st.MSIX.Enabled = 60000, 0xfff0, true
	odd, _ := json.Marshal(st)
	f.Add(odd, ram)
	f.Fuzz(func(t *testing.T, state, ram []byte) {
		var s State
		if json.Unmarshal(state, &s) != nil {
			return
		}
		mem := virtiotest.NewMem(virtiotest.FuzzMemSize)
		copy(mem.B, ram)
		tr := restoreRig(t, mem)
		defer tr.Close()
		if err := tr.RestoreState(&s); err != nil {
			return
		}
		if s.Activated { // else no device goroutine reads the queues
			virtiotest.Settle(t, tr.queues...)
		}
		if _, err := tr.SaveState(); err != nil {
			t.Fatalf("SaveState after a restore: %v", err)
		}
	})
}
