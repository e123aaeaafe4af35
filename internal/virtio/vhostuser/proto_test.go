package vhostuser

import (
	"bytes"
	"testing"
)

// TestLayouts: the payloads byte for byte as rust-vmm's vhost crate lays
// them out (repr(C, packed), little-endian).
func TestLayouts(t *testing.T) {
	for _, c := range []struct {
		name string
		got  interface{ MarshalBinary() ([]byte, error) }
		want []byte
	}{
		{"header", Header{Request: SetVringAddr, Flags: flagVersion | flagNeedReply, Size: 40},
			[]byte{9, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0}},
		{"vring state", VringState{Index: 2, Num: 1024}, []byte{2, 0, 0, 0, 0, 4, 0, 0}},
		{"vring addr", VringAddr{Index: 1, Flags: 0, Desc: 0x1122334455667788, Used: 0x10, Avail: 0x20, Log: 0},
			[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
				0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"mem table", MemTable{{GuestPhysAddr: 0x1000, MemorySize: 0x2000, UserspaceAddr: 0x7f00_0000_0000, MmapOffset: 0x3000}},
			[]byte{1, 0, 0, 0, 0, 0, 0, 0,
				0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0,
				0, 0, 0, 0, 0, 0x7f, 0, 0, 0, 0x30, 0, 0, 0, 0, 0, 0}},
		{"single region", SingleMemRegion{GuestPhysAddr: 1, MemorySize: 2, UserspaceAddr: 3, MmapOffset: 4},
			[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
				3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0}},
		{"config header", ConfigHeader{Offset: 0, Size: 4}, []byte{0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"fs config", FsConfig{Tag: "kataShared", NumRequestQueues: 1},
			append(append([]byte("kataShared"), make([]byte, 26)...), 1, 0, 0, 0)},
	} {
		b, err := c.got.MarshalBinary()
		if err != nil || !bytes.Equal(b, c.want) {
			t.Errorf("%s: % x, %v\nwant % x", c.name, b, err, c.want)
		}
	}
	long, _ := FsConfig{Tag: string(bytes.Repeat([]byte("t"), 40))}.MarshalBinary()
	if len(long) != FsConfigSize || long[FsTagSize-1] != 't' || long[FsTagSize] != 0 {
		t.Errorf("a 40-byte tag: % x", long)
	}
}
