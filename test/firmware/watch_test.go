package firmware

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWatchBoot: watchBoot returns the exit of a process that ends, nil
// once the output is what the caller waits for, and an error naming the
// silence for a console that stopped growing (killing the process).
func TestWatchBoot(t *testing.T) {
	defer func(d time.Duration) { silentLimit = d }(silentLimit)
	silentLimit = 2 * time.Second
	serial := filepath.Join(t.TempDir(), "serial")
	sh := func(script string) *exec.Cmd { return exec.Command("sh", "-c", script, "sh", serial) }

	if err := watchBoot(t, sh(`echo up > "$1"; exit 3`), serial, nil); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("a process that exits 3: %v", err)
	}
	start := time.Now()
	err := watchBoot(t, sh(`echo up > "$1"; sleep 1; echo GRUB >> "$1"; exec sleep 60`), serial,
		func(out string) bool { return strings.Contains(out, "GRUB") })
	if err != nil || time.Since(start) > 30*time.Second {
		t.Errorf("waiting for GRUB: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	err = watchBoot(t, sh(`echo up > "$1"; exec sleep 60`), serial, nil)
	if err == nil || !strings.Contains(err.Error(), "silent for 2s after 3 bytes") || time.Since(start) > 30*time.Second {
		t.Errorf("a silent console: %v after %v", err, time.Since(start))
	}
}
