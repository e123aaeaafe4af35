package lifecycle

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLandlock (upstream's test_landlock): with --landlock the VMM may
// open only what its config names plus --landlock-rules. After the guest
// boots, vm.add-disk of an image outside the rules fails and the guest
// runs on; an image created later inside a rules directory can be added
// and the guest reads it. Seccomp is on (the default) as in every test.
func TestLandlock(t *testing.T) {
	g := newGuest(t)
	dir := t.TempDir()
	allowed := filepath.Join(dir, "allowed")
	if err := os.Mkdir(allowed, 0o700); err != nil {
		t.Fatal(err)
	}
	p := g.start(t, cmdline(true, fmt.Sprintf(hotplugScript, 1)),
		"--landlock", "--landlock-rules", "path="+allowed+",access=rw")
	p.waitBoots(1)
	p.waitOutput("guest waiting for a disk", 0, bootTimeout, "HP-WAIT 0\n")
	if log := p.processLog(); !strings.Contains(log, "Landlock applied") {
		t.Fatalf("no Landlock in the VMM log:\n%s", log)
	}

	pattern := func(path, pat string) {
		data := make([]byte, 1<<20)
		copy(data, pat)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(dir, "outside.img")
	pattern(outside, "OUTSIDE-THE-RULES-000000")
	body, _ := json.Marshal(map[string]any{"path": outside, "serial": "out"})
	ctx, cancel := p.ctx()
	_, err := p.api.AddDisk(ctx, body)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("vm.add-disk outside the rules: %v", err)
	}
	p.wantState("Running")

	inside := filepath.Join(allowed, "inside.img")
	pattern(inside, "HOTPLUG-PATTERN-00000000")
	body, _ = json.Marshal(map[string]any{"path": inside, "serial": "hp-0", "readonly": true})
	ctx, cancel = p.ctx()
	_, err = p.api.AddDisk(ctx, body)
	cancel()
	if err != nil {
		t.Fatalf("vm.add-disk inside the rules: %v", err)
	}
	p.waitOutput("guest reading the disk", 0, apiTimeout, "HP-ADDED 0 hp-0 HOTPLUG-PATTERN-00000000")
}
