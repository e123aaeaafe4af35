package cachedir

import (
	"path/filepath"
	"testing"
	"time"
)

// TestLockExcludes: a second Lock of the same directory waits for the
// first unlock.
func TestLockExcludes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := Lock(dir)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("a second Lock did not wait")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case u := <-got:
		u()
	case <-time.After(10 * time.Second):
		t.Fatal("the second Lock still waits after unlock")
	}
}
