package kvm_test

import (
	"errors"
	"runtime"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// BenchmarkIOExit measures one guest OUT -> KVM_EXIT_IO -> KVM_RUN round
// trip, the cost floor of every port-I/O device access.
func BenchmarkIOExit(b *testing.B) {
	g := newGuest(b, 64<<10, 0)
	g.realMode(b, []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee,       // out dx, al
		0xeb, 0xfd, // jmp back to the out
	})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	for range b.N {
		e, err := g.vcpu.Run()
		if err != nil || e.Reason != kvm.ExitIO {
			b.Fatalf("exit %v, %v", e, err)
		}
	}
}

// BenchmarkMMIOExit measures a guest MMIO write round trip.
func BenchmarkMMIOExit(b *testing.B) {
	g := newGuest(b, 64<<10, 0)
	g.realMode(b, []byte{
		0xb8, 0x00, 0xd0, // mov ax, 0xd000
		0x8e, 0xd8, // mov ds, ax
		0xa2, 0x00, 0x00, // mov [0], al
		0xeb, 0xfb, // jmp back to the store
	})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	for range b.N {
		e, err := g.vcpu.Run()
		if err != nil || e.Reason != kvm.ExitMMIO {
			b.Fatalf("exit %v, %v", e, err)
		}
	}
}

// BenchmarkKick measures Kick until the vCPU thread is back in user space
// with ExitIntr, with the guest spinning in between.
func BenchmarkKick(b *testing.B) {
	g := newGuest(b, 64<<10, 0)
	g.realMode(b, []byte{0xeb, 0xfe}) // jmp $
	exits := make(chan error)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			e, err := g.vcpu.Run()
			if errors.Is(err, kvm.ErrClosed) {
				return
			}
			if err == nil && e.Reason != kvm.ExitIntr {
				err = errUnexpected(e)
			}
			select {
			case exits <- err:
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		g.vcpu.Kick() // release a final Run
		<-done
	}()
	b.ResetTimer()
	for range b.N {
		if err := g.vcpu.Kick(); err != nil {
			b.Fatal(err)
		}
		if err := <-exits; err != nil {
			b.Fatal(err)
		}
	}
}

type errUnexpected kvm.Exit

func (e errUnexpected) Error() string { return "unexpected exit " + kvm.Exit(e).String() }
