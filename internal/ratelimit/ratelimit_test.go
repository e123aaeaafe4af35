package ratelimit

import (
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func tb(size, burst, ms uint64) *config.TokenBucketConfig {
	return &config.TokenBucketConfig{Size: size, OneTimeBurst: &burst, RefillTime: ms}
}

// step is one Consume after the clock moved by after: its answer, and,
// when refused, the wait it gives (if wait is set).
type step struct {
	after time.Duration
	n     uint64
	ok    bool
	wait  time.Duration
	why   string
}

// run plays steps on a limiter for c with a fake clock.
func run(t *testing.T, c *config.RateLimiterConfig, steps []step) {
	t.Helper()
	clk := &clock{t: time.Unix(100, 0)}
	l := newAt(c, clk.now)
	for i, s := range steps {
		clk.t = clk.t.Add(s.after)
		ok, wait := l.Consume(s.n)
		if ok != s.ok || (s.wait != 0 && wait != s.wait) {
			t.Fatalf("step %d (%s): Consume(%d) = %v, wait %v; want %v, wait %v", i, s.why, s.n, ok, wait, s.ok, s.wait)
		}
	}
}

func TestNoLimit(t *testing.T) {
	var l *Limiter
	if ok, _ := l.Consume(1 << 40); !ok {
		t.Fatal("a nil limiter refused")
	}
	if New(&config.RateLimiterConfig{}) != nil || New(nil) != nil {
		t.Fatal("a config without buckets made a limiter")
	}
}

// TestBandwidth: the bucket starts full, refills linearly, and a refusal
// blocks for the refill interval.
func TestBandwidth(t *testing.T) {
	run(t, &config.RateLimiterConfig{Bandwidth: tb(1000, 0, 1000)}, []step{
		{n: 1000, ok: true, why: "a full bucket gives its size"},
		{n: 1, wait: RefillInterval, why: "empty: refused for the refill interval"},
		{after: 50 * time.Millisecond, n: 1, wait: 50 * time.Millisecond, why: "still blocked"},
		{after: 450 * time.Millisecond, n: 500, ok: true, why: "half the refill time, half the tokens"},
		{after: 100 * time.Millisecond, n: 101, why: "100 ms give 100 tokens, not 101"},
		{after: RefillInterval, n: 200, ok: true, why: "200 ms give 200 tokens"},
		{after: time.Hour, n: 1000, ok: true, why: "an hour fills the bucket"},
		{n: 1, why: "but not past its size"},
	})
}

// TestOneTimeBurst: the burst goes first and never refills.
func TestOneTimeBurst(t *testing.T) {
	run(t, &config.RateLimiterConfig{Bandwidth: tb(100, 500, 1000)}, []step{
		{n: 500, ok: true, why: "the burst"},
		{n: 100, ok: true, why: "then the bucket"},
		{n: 1, why: "both spent"},
	})
}

// TestOverConsumption: a request past the bucket's size passes once the
// bucket is emptied; then everything waits for the excess to refill.
func TestOverConsumption(t *testing.T) {
	run(t, &config.RateLimiterConfig{Bandwidth: tb(1000, 0, 1000)}, []step{
		{n: 3000, ok: true, why: "an oversized request passes"},
		{n: 1, wait: 2 * time.Second, why: "2000 tokens over: two refill times"},
	})
}

// TestOpsGivenBack: an operation whose bytes are refused is given back.
func TestOpsGivenBack(t *testing.T) {
	run(t, &config.RateLimiterConfig{Bandwidth: tb(100, 0, 1000), Ops: tb(2, 0, 1000)}, []step{
		{n: 100, ok: true, why: "first request"},
		{n: 50, why: "bytes spent"},
		{after: 500 * time.Millisecond, n: 50, ok: true, why: "refilled: 50 bytes, and the refused op was given back"},
		{n: 0, ok: true, why: "the second op"},
		{n: 0, why: "no third op"},
	})
}
