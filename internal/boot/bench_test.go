package boot

import (
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/arch/x86"
)

// BenchmarkLoadBzImage loads an 8 MiB kernel and 16 MiB initramfs, the
// copy-dominated part of boot latency.
func BenchmarkLoadBzImage(b *testing.B) {
	kernel := synthBzImage(make([]byte, 8<<20))
	le.PutUint32(kernel[0x260:], 16<<20)
	initrd := make([]byte, 16<<20)
	mem := &flatRAM{buf: make([]byte, 64<<20)}
	ram := x86.RAMRegions(64 << 20)
	b.SetBytes(int64(len(kernel) + len(initrd)))
	for b.Loop() {
		if _, err := LoadImage(mem, ram, Params{Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyS0"}); err != nil {
			b.Fatal(err)
		}
	}
}

type flatRAM struct{ buf []byte }

func (m *flatRAM) WriteAt(p []byte, off int64) (int, error) { return copy(m.buf[off:], p), nil }
