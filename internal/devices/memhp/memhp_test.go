package memhp

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"testing"
)

func newDev() *Device { return New(slog.New(slog.DiscardHandler)) }

func read32(d *Device, off uint64) uint32 {
	b := []byte{0xaa, 0xaa, 0xaa, 0xaa}
	d.Read(Base, off, b)
	return binary.LittleEndian.Uint32(b)
}

func status(d *Device) byte {
	b := []byte{0xaa}
	d.Read(Base, StatusOffset, b)
	return b[0]
}

func sel(d *Device, n uint32) {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, n)
	d.Write(Base, SelectionOffset, b)
}

// TestPlugAndGuestScan walks the registers as the guest's MSCN and MCRS
// do: select, read status, read base and length, acknowledge.
func TestPlugAndGuestScan(t *testing.T) {
	d := newDev()
	sel(d, 0)
	if s := status(d); s != 0 {
		t.Fatalf("empty slot status %#x", s)
	}
	n, err := d.Plug(0x1_0000_0000, 512<<20)
	if err != nil || n != 0 {
		t.Fatalf("Plug = %d, %v", n, err)
	}
	n, err = d.Plug(0x1_2000_0000, 0x1_0000_0000)
	if err != nil || n != 1 {
		t.Fatalf("second Plug = %d, %v", n, err)
	}
	for slot, want := range []struct{ bl, bh, ll, lh uint32 }{
		{0, 1, 512 << 20, 0},
		{0x2000_0000, 1, 0, 1},
	} {
		sel(d, uint32(slot))
		if s := status(d); s != StatusEnabled|StatusInserting {
			t.Fatalf("slot %d status %#x, want enabled|inserting", slot, s)
		}
		got := [4]uint32{read32(d, BaseLowOffset), read32(d, BaseHighOffset), read32(d, LengthLowOffset), read32(d, LengthHighOffset)}
		if got != [4]uint32{want.bl, want.bh, want.ll, want.lh} {
			t.Fatalf("slot %d base/length registers %#x", slot, got)
		}
		// MSCN's `\_SB.MHPC.MINS = One`: a byte write of bit 1.
		d.Write(Base, StatusOffset, []byte{StatusInserting})
		if s := status(d); s != StatusEnabled {
			t.Fatalf("slot %d status after ack %#x", slot, s)
		}
	}
	// Eject is not supported: the slot stays enabled.
	d.Write(Base, StatusOffset, []byte{StatusEject})
	if d.Status(1) != StatusEnabled || d.Free() != Slots-2 {
		t.Fatalf("after eject: status %#x, free %d", d.Status(1), d.Free())
	}
}

func TestSlotsRunOut(t *testing.T) {
	d := newDev()
	for i := 0; i < Slots; i++ {
		if _, err := d.Plug(uint64(i+1)<<32, 128<<20); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Plug(1<<40, 128<<20); !errors.Is(err, ErrNoSlot) || err.Error() != "No ACPI slot available" {
		t.Fatalf("ninth Plug: %v", err)
	}
	if _, err := newDev().Plug(1<<32, 0); err == nil {
		t.Fatal("empty range accepted")
	}
}

// TestBadAccesses: wrong widths, unknown offsets and slots past the last
// read as zeros and change nothing.
func TestBadAccesses(t *testing.T) {
	d := newDev()
	d.Plug(1<<32, 128<<20)
	b := []byte{0xaa, 0xaa}
	d.Read(Base, BaseLowOffset, b)
	if b[0] != 0 || b[1] != 0 {
		t.Fatalf("2-byte base read %x", b)
	}
	if v := read32(d, 0x10); v != 0 {
		t.Fatalf("PXM read %#x", v)
	}
	sel(d, 200)
	if s := status(d); s != 0 {
		t.Fatalf("out-of-range slot status %#x", s)
	}
	d.Write(Base, StatusOffset, []byte{StatusInserting})
	d.Write(Base, 0x8, []byte{1, 2, 3, 4})
	d.Write(Base, StatusOffset, nil)
	if d.Status(0) != StatusEnabled|StatusInserting {
		t.Fatalf("slot 0 changed: %#x", d.Status(0))
	}
}
