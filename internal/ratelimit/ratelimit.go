// Package ratelimit is upstream's rate_limiter crate (Firecracker's
// design, cloud-hypervisor rate_limiter/src/lib.rs): token buckets for
// bytes and operations, with a one-time burst, that devices consult before
// each request. A bucket starts full and refills linearly, size tokens per
// refill_time milliseconds. A request larger than a whole bucket is let
// through once the bucket is emptied, and the limiter then refuses
// everything for the time the excess takes to refill (over-consumption).
package ratelimit

import (
	"sync"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

// RefillInterval is how long a device waits after a refusal before it
// asks again (upstream's REFILL_TIMER_DURATION).
const RefillInterval = 100 * time.Millisecond

// bucket is upstream's TokenBucket.
type bucket struct {
	size, oneTimeBurst, refillMs uint64
	budget                       uint64
	lastUpdate                   time.Time
	// The refill rate size/(refillMs*1e6) per nanosecond, reduced by
	// their greatest common divisor so that the products do not overflow.
	capacity, refillNs uint64
}

func newBucket(c *config.TokenBucketConfig, now time.Time) *bucket {
	if c == nil || c.Size == 0 || c.RefillTime == 0 {
		return nil // upstream: no limit on this token type
	}
	ns := c.RefillTime * uint64(time.Millisecond)
	g := gcd(c.Size, ns)
	b := &bucket{size: c.Size, refillMs: c.RefillTime, budget: c.Size, lastUpdate: now, capacity: c.Size / g, refillNs: ns / g}
	if c.OneTimeBurst != nil {
		b.oneTimeBurst = *c.OneTimeBurst
	}
	return b
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// reduce is TokenBucket::reduce: ok, or not, and for a request past the
// bucket's size the excess in bucket sizes (over > 0, ok true).
func (b *bucket) reduce(tokens uint64, now time.Time) (ok bool, over float64) {
	if b.oneTimeBurst > 0 {
		if b.oneTimeBurst >= tokens {
			b.oneTimeBurst -= tokens
			b.lastUpdate = now
			return true, 0
		}
		tokens -= b.oneTimeBurst
		b.oneTimeBurst = 0
	}
	delta := uint64(now.Sub(b.lastUpdate).Nanoseconds())
	b.lastUpdate = now
	b.budget = min(b.budget+delta*b.capacity/b.refillNs, b.size)
	if tokens > b.budget {
		if tokens > b.size {
			tokens -= b.budget
			b.budget = 0
			return true, float64(tokens) / float64(b.size)
		}
		return false, 0
	}
	b.budget -= tokens
	return true, 0
}

// replenish gives back tokens a refused request had taken.
func (b *bucket) replenish(tokens uint64) {
	if b.oneTimeBurst > 0 {
		b.oneTimeBurst += tokens
		return
	}
	b.budget = min(b.budget+tokens, b.size)
}

// Limiter is upstream's RateLimiter: a bandwidth bucket, an operations
// bucket (either may be absent) and the time until which it refuses
// everything. Devices sharing a rate_limit_group share one Limiter. Safe
// for use by several goroutines.
type Limiter struct {
	mu           sync.Mutex
	bytes, ops   *bucket
	blockedUntil time.Time
	now          func() time.Time
}

// New returns the limiter c describes, or nil (no limit) when it has no
// bucket.
func New(c *config.RateLimiterConfig) *Limiter {
	return newAt(c, time.Now)
}

func newAt(c *config.RateLimiterConfig, now func() time.Time) *Limiter {
	if c == nil {
		return nil
	}
	t := now()
	l := &Limiter{bytes: newBucket(c.Bandwidth, t), ops: newBucket(c.Ops, t), now: now}
	if l.bytes == nil && l.ops == nil {
		return nil
	}
	return l
}

// Consume takes one operation and n bytes, or nothing. When it refuses it
// says how long to wait before asking again. A nil Limiter allows all.
// Like upstream's block device: the operation first, then the bytes, and
// the operation is given back when the bytes are refused.
func (l *Limiter) Consume(n uint64) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.blockedUntil) {
		return false, l.blockedUntil.Sub(now)
	}
	if !l.take(l.ops, 1, now) {
		return false, l.blockedUntil.Sub(now)
	}
	if n > 0 && !l.take(l.bytes, n, now) {
		if l.ops != nil {
			l.ops.replenish(1)
		}
		return false, l.blockedUntil.Sub(now)
	}
	return true, 0
}

// Wait blocks until Consume allows one operation of n bytes, or until
// stopping reports true (a device being paused or reset goes on at once:
// it must not wait for tokens). Devices call it from their queue
// goroutines; upstream instead stops serving the queue until its refill
// timer fires, which the guest sees the same way.
func (l *Limiter) Wait(n uint64, stopping func() bool) {
	for {
		ok, wait := l.Consume(n)
		if ok || stopping() {
			return
		}
		time.Sleep(min(wait, 20*time.Millisecond))
	}
}

// take is RateLimiter::consume for one bucket (nil: no limit). mu held.
func (l *Limiter) take(b *bucket, n uint64, now time.Time) bool {
	if b == nil {
		return true
	}
	ok, over := b.reduce(n, now)
	switch {
	case !ok:
		l.blockedUntil = now.Add(RefillInterval)
	case over > 0:
		l.blockedUntil = now.Add(time.Duration(over * float64(b.refillMs) * float64(time.Millisecond)))
	}
	return ok
}
