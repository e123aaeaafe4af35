package devmgr

import (
	"fmt"
	"sync"
)

// GSIs hands out global system interrupt numbers for MSI vectors, as
// upstream's KvmMsiInterruptManager does above the IOAPIC's pins, and
// takes them back: a hot-removed device's GSIs are reused.
type GSIs struct {
	mu         sync.Mutex
	first, end uint32
	used       []bool // index gsi-first
	inUse      int
}

// NewGSIs returns an allocator over [first, end).
func NewGSIs(first, end uint32) *GSIs {
	return &GSIs{first: first, end: end, used: make([]bool, end-first)}
}

// Allocate reserves n consecutive GSIs (first fit) and returns the first.
func (g *GSIs) Allocate(n int) (uint32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n <= 0 {
		return 0, fmt.Errorf("allocating %d GSIs", n)
	}
	run := 0
	for i := range g.used {
		if g.used[i] {
			run = 0
			continue
		}
		run++
		if run == n {
			start := i - n + 1
			for j := start; j <= i; j++ {
				g.used[j] = true
			}
			g.inUse += n
			return g.first + uint32(start), nil
		}
	}
	return 0, fmt.Errorf("%d MSI vectors: no %d consecutive free GSIs below %d (%d in use)", n, n, g.end, g.inUse)
}

// Free gives back n GSIs from base.
func (g *GSIs) Free(base uint32, n int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if base < g.first || uint64(base)+uint64(n) > uint64(g.end) {
		return fmt.Errorf("freeing GSIs %d+%d outside [%d, %d)", base, n, g.first, g.end)
	}
	for i := 0; i < n; i++ {
		j := base - g.first + uint32(i)
		if !g.used[j] {
			return fmt.Errorf("freeing GSI %d, which is not allocated", base+uint32(i))
		}
	}
	for i := 0; i < n; i++ {
		g.used[base-g.first+uint32(i)] = false
	}
	g.inUse -= n
	return nil
}

// InUse is how many GSIs are allocated.
func (g *GSIs) InUse() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inUse
}
