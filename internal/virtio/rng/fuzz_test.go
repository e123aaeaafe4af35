package rng_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio/rng"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// FuzzRngQueue lets fuzzer-chosen descriptor tables and available rings
// reach virtio-rng (entropy from a file in a temporary directory) and the
// device fill them. It must not panic, hang, nor write guest RAM outside
// the used ring and the device-writable buffers.
func FuzzRngQueue(f *testing.F) {
	src := filepath.Join(f.TempDir(), "entropy")
	if err := os.WriteFile(src, bytes.Repeat([]byte("entropy!"), 8192), 0o600); err != nil {
		f.Fatal(err)
	}
	for _, chains := range [][]virtiotest.SeedChain{
		{{In: []uint32{64}}, {In: []uint32{16, 16}}},
		{{Out: [][]byte{{1}}, In: []uint32{4096}}},
		{{In: []uint32{0}}},
	} {
		var heap []byte
		q := virtiotest.FuzzSeed(&heap, chains...)
		f.Add(^uint64(0), heap, q)
	}
	f.Fuzz(func(t *testing.T, features uint64, heap, q []byte) {
		d, err := rng.New(config.RngConfig{Src: src})
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
