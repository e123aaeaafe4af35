// Package testnet gives end-to-end tests network namespaces of their own,
// so that their taps, addresses and routes cannot meet the machine's or
// another test's.
package testnet

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nimbus-vmm/nimbus/internal/testproc"
)

// InNetns runs fn on a fresh OS thread switched into ns. The thread is
// never unlocked, so the runtime discards it when fn returns instead of
// reusing a thread in the wrong namespace. Sockets and tap fds fn opens
// stay in ns and are usable from any goroutine afterwards, and processes
// fn starts run in ns.
func InNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// NewNetns creates an unnamed network namespace with loopback up and
// returns a handle to it, closed at the end of the test (the namespace
// goes away with its last reference).
func NewNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see InNetns
		var err error
		ns, err = netns.New()
		if err == nil {
			err = netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}})
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// StartIn returns a testproc.StartVia starter that forks from a thread in
// ns, so the child runs there; with netns.None() it forks where the test is.
func StartIn(ns netns.NsHandle) func(start func() error) error {
	if !ns.IsOpen() {
		return testproc.Direct
	}
	return func(start func() error) error { return InNetns(ns, start) }
}
