package kvmtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/kvm"
)

// recorder stands in for *testing.T and records how the gate ended the
// test. Like the real methods, Fatalf and Skipf stop the goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func gate(open func() (*kvm.System, error)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		require(r, open)
	}()
	<-done
	return r
}

func noKVM() (*kvm.System, error) { return kvm.OpenPath("/nonexistent/kvm") }

func TestRequireSkipsWithoutKVM(t *testing.T) {
	t.Setenv(RequireEnv, "")
	r := gate(noKVM)
	if r.fatal != "" || !strings.Contains(r.skip, "KVM is unusable") || !strings.Contains(r.skip, RequireEnv) {
		t.Fatalf("fatal=%q skip=%q, want a skip naming %s", r.fatal, r.skip, RequireEnv)
	}
}

func TestRequireFailsWhenRequired(t *testing.T) {
	t.Setenv(RequireEnv, "1")
	r := gate(noKVM)
	if r.skip != "" || !strings.Contains(r.fatal, "/nonexistent/kvm") {
		t.Fatalf("fatal=%q skip=%q, want a failure", r.fatal, r.skip)
	}
}
