package guesttest

import (
	"errors"
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
// bug: with virtiofsd doing so, TestVirtioFs broke 7 of its 9 tries in
// three test runs (5 of 7 in a fresh sandbox boot: stalls, the sandbox
// kernel's stack guard page hit in the vcpu thread, a package timeout)
// and 3 of 3 in a row in one boot (a guest silent after its reboot, the
// stack guard page, a guest silent from the start); pinned, it passed 4
// of 4 in a row. Guests with more than one vCPU run much slower
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
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
