package legacy

import (
	"bytes"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// FuzzCMOSState restores arbitrary bytes as a snapshot's CMOS state, then
// lets the guest access the index and data ports: the restore must fail
// or leave a CMOS that saves back what it restored and serves every
// access without panicking.
func FuzzCMOSState(f *testing.F) {
	c := NewCMOS(512<<20, 1<<30, nil)
	good, _ := c.SaveState()
	f.Add(good, []byte{0, 0x0b, 1, 0x10})
	f.Add([]byte(`{"Index":255,"Data":"`+string(bytes.Repeat([]byte("A"), 172))+`"}`), []byte{9, 0})
	f.Fuzz(func(t *testing.T, state, ops []byte) {
		c := NewCMOS(512<<20, 1<<30, devices.ExitFunc(func(devices.ExitReason) {}))
		if err := c.RestoreState(state); err != nil {
			return
		}
		saved, err := c.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		again := NewCMOS(0, 0, nil)
		if err := again.RestoreState(saved); err != nil {
			t.Fatalf("the saved state %s does not restore: %v", saved, err)
		}
		if back, _ := again.SaveState(); !bytes.Equal(back, saved) {
			t.Fatalf("state %s restores as %s", saved, back)
		}
		// ops: pairs of (port, value); bit 3 of the port makes it a read.
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 1)
			if ops[i]&8 != 0 {
				var b [1]byte
				c.Read(0, off, b[:])
			} else {
				c.Write(0, off, []byte{ops[i+1]})
			}
		}
	})
}
