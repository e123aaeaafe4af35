package guesttest

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/sandbox"
)

// PinToOneCPU, in the QEMU sandbox only, runs the test process (every
// thread it has and will have) and so every process it starts on the
// sandbox's first CPU until the test ends. A process working on the second
// sandbox CPU while the first runs a nested guest sets off QEMU's TCG SVM
// bug: with virtiofsd doing so, TestVirtioFs broke in 6 of 8 fresh boots
// (a guest silent after its reboot, the sandbox kernel's stack guard page
// hit in the vcpu thread, a guest silent from the start); pinned, it
// passed 4 runs in a row. Guests with more than one vCPU run much slower
// pinned, so only tests that need it call this.
func PinToOneCPU(t testing.TB) {
	t.Helper()
	if os.Getenv(sandbox.EnvInSandbox) != "1" {
		return
	}
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatalf("sched_getaffinity: %v", err)
	}
	var one unix.CPUSet
	one.Set(0)
	if err := setThreadsAffinity(&one); err != nil {
		t.Fatalf("pinning the test to CPU 0: %v", err)
	}
	t.Cleanup(func() {
		if err := setThreadsAffinity(&was); err != nil {
			t.Errorf("restoring the test's CPUs: %v", err)
		}
	})
}

// setThreadsAffinity sets the CPU affinity of every thread of this
// process (a thread the runtime starts meanwhile inherits its creator's).
func setThreadsAffinity(set *unix.CPUSet) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A thread that exited meanwhile is no error.
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}
