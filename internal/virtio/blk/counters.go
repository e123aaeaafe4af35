package blk

import (
	"math"
	"sync"
	"time"
)

// opStats are one direction's counters: bytes, ops and latency in
// microseconds (upstream's units for read_latency_* / write_latency_*).
type opStats struct {
	mu                  sync.Mutex
	bytes, ops          uint64
	minUs, maxUs, sumUs uint64
}

func (s *opStats) record(n uint64, lat time.Duration) {
	us := uint64(lat.Microseconds())
	s.mu.Lock()
	s.bytes += n
	s.ops++
	s.minUs = min(s.minUs, us)
	s.maxUs = max(s.maxUs, us)
	s.sumUs += us
	s.mu.Unlock()
}

func (s *opStats) into(m map[string]uint64, dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[dir+"_bytes"] = s.bytes
	m[dir+"_ops"] = s.ops
	m[dir+"_latency_min"] = s.minUs
	m[dir+"_latency_max"] = s.maxUs
	var avg uint64
	if s.ops > 0 {
		avg = s.sumUs / s.ops
	}
	m[dir+"_latency_avg"] = avg
}

type counters struct{ read, write opStats }

func (c *counters) init() {
	c.read.minUs = math.MaxUint64
	c.write.minUs = math.MaxUint64
}

func (c *counters) snapshot() map[string]uint64 {
	m := make(map[string]uint64, 10)
	c.read.into(m, "read")
	c.write.into(m, "write")
	return m
}
