package blk_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/virtio/blk"
	"github.com/nimbus-vmm/nimbus/internal/virtio/virtiotest"
)

// blkSeedHeader is a request header (type, reserved, sector).
func blkSeedHeader(typ uint32, sector uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint64(b, sector)
}

// FuzzBlkQueues lets fuzzer-chosen descriptor tables, available rings,
// request headers and payloads reach a virtio-blk disk (raw image in a
// temporary directory; read-only, sparse, O_DIRECT and two queues as mode
// says) and the device serve them. It must not panic, hang, write guest
// RAM outside the used rings and the device-writable buffers, nor touch
// the image past its end.
func FuzzBlkQueues(f *testing.F) {
	const imageSize = 64 << 10
	img := filepath.Join(f.TempDir(), "disk.raw")
	if err := os.WriteFile(img, make([]byte, imageSize), 0o600); err != nil {
		f.Fatal(err)
	}
	seg := binary.LittleEndian.AppendUint64(nil, 2)
	seg = binary.LittleEndian.AppendUint32(seg, 4)
	seg = binary.LittleEndian.AppendUint32(seg, 1) // unmap
	for mode, chains := range [][]virtiotest.SeedChain{
		{{Out: [][]byte{blkSeedHeader(blk.TIn, 0)}, In: []uint32{512, 1}}, {Out: [][]byte{blkSeedHeader(blk.TOut, 1), make([]byte, 512)}, In: []uint32{1}}},
		{{Out: [][]byte{blkSeedHeader(blk.TGetID, 0)}, In: []uint32{20, 1}}, {Out: [][]byte{blkSeedHeader(blk.TFlush, 0)}, In: []uint32{1}}},
		{{Out: [][]byte{blkSeedHeader(blk.TDiscard, 0), seg}, In: []uint32{1}}, {Out: [][]byte{blkSeedHeader(blk.TWriteZeroes, 0), seg}, In: []uint32{1}}},
		{{Out: [][]byte{blkSeedHeader(blk.TIn, imageSize/512-1)}, In: []uint32{1024, 1}}, {Out: [][]byte{blkSeedHeader(99, 0)}, In: []uint32{1}}},
		{{Out: [][]byte{blkSeedHeader(blk.TOut, 0), make([]byte, 4096)}, In: []uint32{1}}},
	} {
		var heap []byte
		q0 := virtiotest.FuzzSeed(&heap, chains...)
		f.Add(byte(mode), ^uint64(0), heap, q0, []byte(nil))
	}
	f.Fuzz(func(t *testing.T, mode byte, features uint64, heap, q0, q1 []byte) {
		cfg := config.DiskConfig{Path: img, Readonly: mode&1 != 0, Sparse: mode&2 != 0, Direct: mode&4 != 0, Serial: "fuzz-disk"}
		if mode&8 != 0 {
			cfg.NumQueues = 2
		}
		d, err := blk.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := virtiotest.NewFuzzRig(t, d, heap, q0, q1)
		defer r.Finish(t)
		if err := r.Activate(features); err != nil {
			return
		}
		virtiotest.Settle(t, r.Queues...)
		if fi, err := os.Stat(img); err != nil || fi.Size() != imageSize {
			t.Fatalf("image: %v, %v; want %d bytes", fi, err, imageSize)
		}
	})
}
