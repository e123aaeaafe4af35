package pmem_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio/pmem"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// FuzzPmemQueue lets fuzzer-chosen descriptor tables, available rings and
// requests reach virtio-pmem (a 2 MiB file in a temporary directory, or
// with discard_writes) and the device answer them. It must not panic,
// hang, nor write guest RAM outside the used ring and the device-writable
// buffers.
func FuzzPmemQueue(f *testing.F) {
	file := filepath.Join(f.TempDir(), "pmem.img")
	if err := os.WriteFile(file, make([]byte, pmem.Align), 0o600); err != nil {
		f.Fatal(err)
	}
	flush := binary.LittleEndian.AppendUint32(nil, pmem.ReqFlush)
	for _, chains := range [][]virtiotest.SeedChain{
		{{Out: [][]byte{flush}, In: []uint32{4}}, {Out: [][]byte{{9, 0, 0, 0}}, In: []uint32{4}}},
		{{Out: [][]byte{flush[:2], flush[2:]}, In: []uint32{2, 2}}, {Out: [][]byte{flush}}},
	} {
		var heap []byte
		q := virtiotest.FuzzSeed(&heap, chains...)
		f.Add(false, ^uint64(0), heap, q)
	}
	f.Fuzz(func(t *testing.T, discard bool, features uint64, heap, q []byte) {
		d, err := pmem.New(config.PmemConfig{File: file, DiscardWrites: discard})
		if err != nil {
			t.Fatal(err)
		}
		r := virtiotest.NewFuzzRig(t, d, heap, q)
		defer r.Finish(t)
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues...)
	})
}
