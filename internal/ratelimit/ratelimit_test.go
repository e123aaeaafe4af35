package ratelimit

import (
	"testing"
	"time"

	"github.com/nimbus-vmm/nimbus/internal/config"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func u64(v uint64) *uint64           { return &v }
func tb(size, burst, ms uint64) *config.TokenBucketConfig {
	return &config.TokenBucketConfig{Size: size, OneTimeBurst: u64(burst), RefillTime: ms}
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
	c := &clock{t: time.Unix(100, 0)}
	l := newAt(&config.RateLimiterConfig{Bandwidth: tb(1000, 0, 1000)}, c.now)
	if ok, _ := l.Consume(1000); !ok {
		t.Fatal("a full bucket refused its size")
	}
	ok, wait := l.Consume(1)
	if ok || wait != RefillInterval {
		t.Fatalf("empty bucket: ok=%v wait=%v, want a refusal for %v", ok, wait, RefillInterval)
	}
	c.add(50 * time.Millisecond)
	if ok, wait := l.Consume(1); ok || wait != 50*time.Millisecond {
		t.Fatalf("while blocked: ok=%v wait=%v", ok, wait)
	}
	c.add(450 * time.Millisecond) // 500 ms since the bucket emptied: 500 tokens
	if ok, _ := l.Consume(500); !ok {
		t.Fatal("half a refill time gave fewer than half the tokens")
	}
	c.add(100 * time.Millisecond)
	if ok, _ := l.Consume(101); ok {
		t.Fatal("100 ms gave more than 100 tokens")
	}
	c.add(RefillInterval)
	if ok, _ := l.Consume(200); !ok {
		t.Fatal("200 ms gave fewer than 200 tokens")
	}
	c.add(time.Hour)
	if ok, _ := l.Consume(1000); !ok {
		t.Fatal("an hour did not fill the bucket")
	}
	if ok, _ := l.Consume(1); ok {
		t.Fatal("an hour filled the bucket past its size")
	}
}

// TestOneTimeBurst: the burst goes first and never refills.
func TestOneTimeBurst(t *testing.T) {
	c := &clock{t: time.Unix(100, 0)}
	l := newAt(&config.RateLimiterConfig{Bandwidth: tb(100, 500, 1000)}, c.now)
	if ok, _ := l.Consume(500); !ok {
		t.Fatal("the burst refused")
	}
	if ok, _ := l.Consume(100); !ok {
		t.Fatal("the bucket refused after the burst")
	}
	if ok, _ := l.Consume(1); ok {
		t.Fatal("burst and bucket both spent, yet allowed")
	}
}

// TestOverConsumption: a request past the bucket's size passes once the
// bucket is emptied; then everything waits for the excess to refill.
func TestOverConsumption(t *testing.T) {
	c := &clock{t: time.Unix(100, 0)}
	l := newAt(&config.RateLimiterConfig{Bandwidth: tb(1000, 0, 1000)}, c.now)
	if ok, _ := l.Consume(3000); !ok {
		t.Fatal("an oversized request was refused")
	}
	ok, wait := l.Consume(1)
	if ok || wait != 2*time.Second {
		t.Fatalf("after 2000 tokens over: ok=%v wait=%v, want 2s", ok, wait)
	}
}

// TestOpsGivenBack: an operation whose bytes are refused is given back.
func TestOpsGivenBack(t *testing.T) {
	c := &clock{t: time.Unix(100, 0)}
	l := newAt(&config.RateLimiterConfig{Bandwidth: tb(100, 0, 1000), Ops: tb(2, 0, 1000)}, c.now)
	if ok, _ := l.Consume(100); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := l.Consume(50); ok {
		t.Fatal("bytes spent, yet allowed")
	}
	c.add(500 * time.Millisecond) // 50 bytes and 1 op back; the refused op was returned
	if ok, _ := l.Consume(50); !ok {
		t.Fatal("refused after the refill")
	}
	if ok, _ := l.Consume(0); !ok {
		t.Fatal("the op the refused request took was not given back")
	}
	if ok, _ := l.Consume(0); ok {
		t.Fatal("more ops than the bucket holds")
	}
}
