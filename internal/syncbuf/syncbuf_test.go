package syncbuf

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWritesAndReads is meant for -race: writers and a reader
// share the buffer, and every write lands whole.
func TestConcurrentWritesAndReads(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "<%d.%d>", i, j)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	s := b.String()
	for i := range 4 {
		for j := range 100 {
			if w := fmt.Sprintf("<%d.%d>", i, j); strings.Count(s, w) != 1 {
				t.Fatalf("%s appears %d times", w, strings.Count(s, w))
			}
		}
	}
}
