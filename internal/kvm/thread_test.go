package kvm

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestSetThreadName(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	comm := func() string {
		b, err := os.ReadFile("/proc/thread-self/comm")
		if err != nil {
			t.Skipf("no /proc/thread-self: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	old := comm()
	defer SetThreadName(old)
	if err := SetThreadName("vcpu12"); err != nil {
		t.Fatal(err)
	}
	if got := comm(); got != "vcpu12" {
		t.Fatalf("comm %q, want vcpu12", got)
	}
	// The kernel keeps 15 bytes.
	if err := SetThreadName("vcpu-with-a-very-long-name"); err != nil {
		t.Fatal(err)
	}
	if got := comm(); got != "vcpu-with-a-ver" {
		t.Fatalf("comm %q, want the 15-byte prefix", got)
	}
}
