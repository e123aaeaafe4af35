package libvirtsim

import "testing"

// TestParseVersion: the examples in ch_conf.c's comment, upstream's own
// two-line output, and what libvirt refuses.
func TestParseVersion(t *testing.T) {
	for out, want := range map[string]uint64{
		"cloud-hypervisor v32.0.0":                                 32000000,
		"cloud-hypervisor v33.0-104-ge0e3779e-dirty":               33000000,
		"cloud-hypervisor testing/v32.0.131-1-ga5d6db5c-dirty":     32000131,
		"cloud-hypervisor v53.0\nMigration Protocol Versions: 1.0": 53000000,
	} {
		if got, err := ParseVersion(out); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", out, got, err, want)
		}
	}
	for _, bad := range []string{"nimbus v53.0\n", "cloud-hypervisor v14.9.0", "cloud-hypervisor vx"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
