package serial

import (
	"bytes"
	"io"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

// FuzzUARTState restores arbitrary bytes as a snapshot's serial state,
// then lets the guest access the registers: the restore must fail or
// leave a UART that saves back what it restored and serves every access
// without panicking.
func FuzzUARTState(f *testing.F) {
	u := New(nil, nil)
	u.Write(0, 3, []byte{0x80})
	u.Write(0, 0, []byte{1})
	u.Write(0, 3, []byte{3})
	good, _ := u.SaveState()
	f.Add(good, []byte{5, 0, 0, 1, 2, 3})
	f.Add([]byte(`{"IER":255,"IIR":255,"LSR":255,"Divisor":0,"Input":"AAAA"}`), []byte{0, 2, 5, 6})
	f.Add([]byte(`{"Input":null}`), []byte(nil))
	f.Fuzz(func(t *testing.T, state, ops []byte) {
		u := New(devices.IRQFunc(func() error { return nil }), io.Discard)
		if err := u.RestoreState(state); err != nil {
			return
		}
		saved, err := u.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		again := New(nil, io.Discard)
		if err := again.RestoreState(saved); err != nil {
			t.Fatalf("the saved state %s does not restore: %v", saved, err)
		}
		if back, _ := again.SaveState(); !bytes.Equal(back, saved) {
			t.Fatalf("state %s restores as %s", saved, back)
		}
		// ops: pairs of (offset, value); bit 3 of the offset makes it a read.
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 7)
			if ops[i]&8 != 0 {
				var b [1]byte
				u.Read(0, off, b[:])
			} else {
				u.Write(0, off, []byte{ops[i+1]})
			}
		}
	})
}
