package hostkvm_test

import (
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/hostkvm"
)

// TestLiveHost logs this machine's classification and times the probe;
// where the probe applies, a hardware verdict must agree with it.
func TestLiveHost(t *testing.T) {
	r := hostkvm.Host()
	t.Logf("%s: %v", r, r.Kind)
	if r.Kind == hostkvm.None {
		t.Skip("no /dev/kvm")
	}
	start := time.Now()
	err := hostkvm.ProbeStockGuest()
	t.Logf("probe: %v in %v", err, time.Since(start))
	if r.Kind == hostkvm.Hardware && err != nil {
		t.Fatalf("classified hardware, but the probe now fails: %v", err)
	}
}
