package serial

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/devices"
)

type countIRQ struct {
	mu sync.Mutex
	n  int
}

func (c *countIRQ) Trigger() error { c.mu.Lock(); c.n++; c.mu.Unlock(); return nil }
func (c *countIRQ) count() int     { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func rd(u *UART, off uint64) byte {
	d := []byte{0}
	u.Read(COM1Base, off, d)
	return d[0]
}

func wr(u *UART, off uint64, v byte) { u.Write(COM1Base, off, []byte{v}) }

func TestResetState(t *testing.T) {
	u := New(nil, nil)
	want := map[uint64]byte{regIER: 0, regIIR: 0xc1, regLCR: 0x03, regMCR: 0x08, regLSR: 0x60, regMSR: 0xb0, regSCR: 0}
	for off, v := range want {
		if got := rd(u, off); got != v {
			t.Errorf("reg %d = %#x, want %#x", off, got, v)
		}
	}
}

func TestOutputAndTHRInterrupt(t *testing.T) {
	var out bytes.Buffer
	irq := &countIRQ{}
	u := New(irq, &out)
	wr(u, regData, 'a') // THRE interrupt disabled: no IRQ
	if irq.count() != 0 {
		t.Fatalf("IRQ raised with IER=0")
	}
	wr(u, regIER, ierTHR) // enabling THRE with THR empty raises it at once
	if irq.count() != 1 {
		t.Fatalf("IRQs after enabling THRE = %d, want 1", irq.count())
	}
	if got := rd(u, regIIR); got != 0xc2 {
		t.Errorf("IIR = %#x, want 0xc2 (THRE pending)", got)
	}
	if got := rd(u, regIIR); got != 0xc1 {
		t.Errorf("IIR after ack = %#x, want 0xc1", got)
	}
	wr(u, regData, 'b')
	if irq.count() != 2 {
		t.Errorf("IRQs after THR write = %d, want 2", irq.count())
	}
	if got := rd(u, regIIR); got&iirTHR == 0 {
		t.Errorf("IIR = %#x, want THRE", got)
	}
	// Multi-byte accesses are ignored, as upstream.
	u.Write(COM1Base, regData, []byte{'x', 'y'})
	if out.String() != "ab" {
		t.Errorf("output = %q, want \"ab\"", out.String())
	}
	if got := rd(u, regLSR); got&(lsrEmpty|lsrIdle) != lsrEmpty|lsrIdle {
		t.Errorf("LSR = %#x, THR not empty", got)
	}
}

func TestDivisorLatch(t *testing.T) {
	var out bytes.Buffer
	u := New(nil, &out)
	wr(u, regLCR, lcrDLAB|0x03)
	wr(u, regData, 0x01) // 115200 baud
	wr(u, regIER, 0x00)
	if rd(u, regData) != 0x01 || rd(u, regIER) != 0x00 {
		t.Errorf("divisor readback wrong")
	}
	if out.Len() != 0 {
		t.Errorf("DLL write went to output: %q", out.String())
	}
	if u.divisor != 1 {
		t.Errorf("divisor = %d", u.divisor)
	}
	wr(u, regIER, 0x12)
	if u.divisor != 0x1201 {
		t.Errorf("divisor = %#x", u.divisor)
	}
	wr(u, regLCR, 0x03)
	if rd(u, regIER) != 0 {
		t.Errorf("IER changed through DLM")
	}
	wr(u, regData, 'z')
	if out.String() != "z" {
		t.Errorf("output = %q", out.String())
	}
}

func TestInputFIFOAndIIR(t *testing.T) {
	irq := &countIRQ{}
	u := New(irq, nil)
	if rd(u, regLSR)&lsrData != 0 {
		t.Fatal("data ready on empty FIFO")
	}
	wr(u, regIER, ierRecv)
	if irq.count() != 0 {
		t.Fatal("RX interrupt with empty FIFO")
	}
	if n := u.Enqueue([]byte("abc")); n != 3 {
		t.Fatalf("Enqueue = %d", n)
	}
	if irq.count() != 1 {
		t.Errorf("IRQs = %d, want 1", irq.count())
	}
	if got := rd(u, regIIR); got != 0xc4 {
		t.Errorf("IIR = %#x, want 0xc4", got)
	}
	for _, want := range []byte("abc") {
		if rd(u, regLSR)&lsrData == 0 {
			t.Fatalf("LSR.DR clear before %q", want)
		}
		if got := rd(u, regData); got != want {
			t.Errorf("RBR = %q, want %q", got, want)
		}
	}
	if rd(u, regLSR)&lsrData != 0 {
		t.Error("LSR.DR set after draining")
	}
	if rd(u, regData) != 0 {
		t.Error("empty RBR not zero")
	}
}

func TestIERReassertsPendingInput(t *testing.T) {
	irq := &countIRQ{}
	u := New(irq, nil)
	u.Enqueue([]byte("q")) // arrives while IER masks it
	if irq.count() != 0 {
		t.Fatal("IRQ while masked")
	}
	wr(u, regIER, ierRecv)
	if irq.count() != 1 || rd(u, regIIR) != 0xc4 {
		t.Errorf("unmasking did not raise the pending RX interrupt")
	}
}

func TestBackpressure(t *testing.T) {
	u := New(nil, nil)
	big := bytes.Repeat([]byte{'x'}, InputCapacity+10)
	if n := u.Enqueue(big); n != InputCapacity {
		t.Fatalf("Enqueue = %d, want %d", n, InputCapacity)
	}
	if n := u.Enqueue([]byte("y")); n != 0 {
		t.Fatalf("Enqueue on full FIFO = %d", n)
	}
	select {
	case <-u.Writable():
		t.Fatal("Writable signalled before the guest read")
	default:
	}
	rd(u, regData)
	select {
	case <-u.Writable():
	default:
		t.Fatal("Writable not signalled after a guest read")
	}
	if n := u.Enqueue([]byte("yz")); n != 1 {
		t.Errorf("Enqueue after one read = %d, want 1", n)
	}
}

func TestLoopback(t *testing.T) {
	var out bytes.Buffer
	irq := &countIRQ{}
	u := New(irq, &out)
	wr(u, regMCR, mcrLoop)
	wr(u, regIER, ierRecv)
	for _, c := range []byte("lo") {
		wr(u, regData, c)
	}
	if out.Len() != 0 {
		t.Errorf("loopback leaked to output: %q", out.String())
	}
	if irq.count() != 2 {
		t.Errorf("IRQs = %d, want 2", irq.count())
	}
	if n := u.Enqueue([]byte("host")); n != 4 {
		t.Errorf("Enqueue in loopback = %d", n)
	}
	if rd(u, regMSR) != defaultMSR || rd(u, regMCR) != mcrLoop {
		t.Error("MSR/MCR readback")
	}
	if a, b := rd(u, regData), rd(u, regData); a != 'l' || b != 'o' {
		t.Errorf("looped bytes %q %q", a, b)
	}
	if rd(u, regLSR)&lsrData != 0 {
		t.Error("host input entered the FIFO in loopback")
	}
	for i := 0; i < 100; i++ {
		wr(u, regData, 'x')
	}
	if u.inLen != loopSize {
		t.Errorf("loop FIFO holds %d, want %d", u.inLen, loopSize)
	}
}

func TestScratchAndUnknownOffset(t *testing.T) {
	u := New(nil, nil)
	wr(u, regSCR, 0x5a)
	if rd(u, regSCR) != 0x5a {
		t.Error("scratch")
	}
	if rd(u, 0xff) != 0 {
		t.Error("unknown offset not zero")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("full") }

func TestOutputErrorStillRaisesTHRE(t *testing.T) {
	irq := &countIRQ{}
	u := New(irq, failWriter{})
	wr(u, regIER, ierTHR)
	wr(u, regData, 'a')
	if irq.count() != 2 {
		t.Errorf("IRQs = %d, want 2", irq.count())
	}
	if _, o := u.Stats(); o != 1 {
		t.Errorf("output errors = %d", o)
	}
}

func TestRegisterAccessAllocationFree(t *testing.T) {
	u := New(devices.IRQFunc(func() error { return nil }), &bytes.Buffer{})
	d := []byte{0}
	wr(u, regIER, ierTHR)
	allocs := testing.AllocsPerRun(100, func() {
		u.Read(COM1Base, regLSR, d)
		u.Write(COM1Base, regSCR, d)
	})
	if allocs != 0 {
		t.Errorf("register access allocates %.1f", allocs)
	}
}

func FuzzUART(f *testing.F) {
	f.Add([]byte{3, 0x80, 0, 1, 3, 3, 1, 3, 0, 'a', 4, 0x10, 0, 'b'})
	f.Fuzz(func(t *testing.T, ops []byte) {
		u := New(devices.IRQFunc(func() error { return nil }), &bytes.Buffer{})
		for len(ops) >= 2 {
			op, v := ops[0], ops[1]
			ops = ops[2:]
			off := uint64(op & 0x0f)
			switch op >> 4 & 3 {
			case 0:
				u.Write(0, off, []byte{v})
			case 1:
				u.Read(0, off, []byte{0})
			case 2:
				u.Enqueue(bytes.Repeat([]byte{v}, int(op)))
			case 3:
				u.Read(0, off, make([]byte, 1+int(v%4)))
			}
			if u.inLen < 0 || u.inLen > InputCapacity {
				t.Fatalf("FIFO length %d", u.inLen)
			}
			if u.iir == 0 {
				t.Fatal("IIR lost its no-interrupt bit")
			}
		}
	})
}

func TestPauseHoldsInputBack(t *testing.T) {
	irq := &countIRQ{}
	u := New(irq, nil)
	wr(u, regIER, ierRecv)
	before := irq.count()
	if err := u.Pause(); err != nil {
		t.Fatal(err)
	}
	if n := u.Enqueue([]byte("ab")); n != 0 {
		t.Fatalf("Enqueue while paused = %d, want 0", n)
	}
	if irq.count() != before || rd(u, regLSR)&lsrData != 0 {
		t.Fatal("paused UART raised an interrupt or has data")
	}
	if err := u.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.Writable():
	default:
		t.Fatal("Resume did not wake the input pump")
	}
	if n := u.Enqueue([]byte("ab")); n != 2 || irq.count() == before {
		t.Fatalf("Enqueue after Resume = %d, irqs %d", n, irq.count()-before)
	}
}
