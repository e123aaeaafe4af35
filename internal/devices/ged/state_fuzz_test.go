package ged

import (
	"bytes"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// FuzzGEDState restores arbitrary bytes as a snapshot's GED state, then
// lets the guest read the notification register: the restore must fail
// or leave a device that saves back what it restored and serves every
// read without panicking.
func FuzzGEDState(f *testing.F) {
	f.Add([]byte(`{"Pending":8}`), uint8(1))
	f.Add([]byte(`{"Pending":-1}`), uint8(8))
	f.Add([]byte(`{}`), uint8(0))
	f.Fuzz(func(t *testing.T, state []byte, reads uint8) {
		d := New(devices.IRQFunc(func() error { return nil }))
		if err := d.RestoreState(state); err != nil {
			return
		}
		saved, err := d.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		again := New(nil)
		if err := again.RestoreState(saved); err != nil {
			t.Fatalf("the saved state %s does not restore: %v", saved, err)
		}
		if back, _ := again.SaveState(); !bytes.Equal(back, saved) {
			t.Fatalf("state %s restores as %s", saved, back)
		}
		for i := range reads % 16 {
			b := make([]byte, 1+i%4)
			d.Read(0, uint64(i%2), b)
		}
	})
}
