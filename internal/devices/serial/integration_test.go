package serial_test

import (
	"os"
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/devices"
	"github.com/nimbus-vmm/nimbus/internal/devices/bus"
	"github.com/nimbus-vmm/nimbus/internal/devices/console"
	"github.com/nimbus-vmm/nimbus/internal/devices/serial"
	"golang.org/x/sys/unix"
)

var _ console.Input = (*serial.UART)(nil)

// TestUARTOverPty wires COM1 the way the VM will: UART on the I/O bus,
// output into a pty backend, input pumped back from the pty.
func TestUARTOverPty(t *testing.T) {
	be, err := console.Open(console.Options{Mode: console.ModePty})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	irqs := make(chan struct{}, 64)
	u := serial.New(devices.IRQFunc(func() error {
		select {
		case irqs <- struct{}{}:
		default:
		}
		return nil
	}), be)
	be.Start(u)
	io := bus.NewIO()
	if err := io.Insert(u, serial.COM1Base, serial.COM1Len); err != nil {
		t.Fatal(err)
	}
	user, err := os.OpenFile(be.Path(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()

	io.Write(0x3f9, []byte{0x01}) // IER: received-data interrupt
	for _, c := range []byte("ok\n") {
		io.Write(0x3f8, []byte{c})
	}
	got := make([]byte, 3)
	if _, err := readWithGuard(user, got); err != nil || string(got) != "ok\n" {
		t.Fatalf("host saw %q, %v", got, err)
	}
	if _, err := user.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-irqs:
	case <-time.After(10 * time.Second): // hang guard, not a timing check
		t.Fatal("no receive interrupt")
	}
	lsr := []byte{0}
	io.Read(0x3fd, lsr)
	rbr := []byte{0}
	io.Read(0x3f8, rbr)
	if lsr[0]&0x01 == 0 || rbr[0] != 'y' {
		t.Errorf("LSR %#x RBR %q", lsr[0], rbr[0])
	}
}

func readWithGuard(f *os.File, buf []byte) (int, error) {
	if err := f.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		// Not pollable: fall back to a plain read.
		return f.Read(buf)
	}
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func BenchmarkTHRWriteThroughBus(b *testing.B) {
	for _, o := range []console.Options{{Mode: console.ModeNull}, {Mode: console.ModeFile, Path: os.DevNull}} {
		b.Run(string(o.Mode), func(b *testing.B) {
			be, err := console.Open(o)
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			u := serial.New(devices.IRQFunc(func() error { return nil }), be)
			io := bus.NewIO()
			if err := io.Insert(u, serial.COM1Base, serial.COM1Len); err != nil {
				b.Fatal(err)
			}
			io.Write(0x3f9, []byte{0x02}) // THRE interrupt on, as Linux runs it
			data := []byte{'x'}
			b.ReportAllocs()
			for b.Loop() {
				io.Write(0x3f8, data)
			}
		})
	}
}
