package guesttest

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// childCPUs is the Cpus_allowed_list of a process the test starts.
func childCPUs(t *testing.T) string {
	out, err := exec.Command("grep", "Cpus_allowed_list", "/proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
	return strings.TrimSpace(v)
}

// TestPinToOneCPU: in the sandbox, processes started during the test run
// on CPU 0 only, and on every CPU again after it; elsewhere nothing moves.
func TestPinToOneCPU(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to pin")
	}
	all := childCPUs(t)
	if all == "0" {
		t.Fatalf("the test already runs on CPU 0 only")
	}
	t.Run("outside", func(t *testing.T) {
		t.Setenv(sandbox.EnvInSandbox, "")
		PinToOneCPU(t)
		if got := childCPUs(t); got != all {
			t.Fatalf("outside the sandbox a child runs on %q, want %q", got, all)
		}
	})
	t.Run("inside", func(t *testing.T) {
		t.Setenv(sandbox.EnvInSandbox, "1")
		PinToOneCPU(t)
		for range 3 { // from whichever thread forks
			if got := childCPUs(t); got != "0" {
				t.Fatalf("pinned, a child runs on %q", got)
			}
		}
	})
	if got := childCPUs(t); got != all {
		t.Fatalf("after the pinned test a child runs on %q, want %q", got, all)
	}
}
