package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/nimbus-vmm/nimbus/internal/events"
)

// The real monitor satisfies the interface the server consumes.
var _ Subscriber[events.Event] = (*events.Monitor)(nil)

// countingSub wraps a Subscriber and counts live subscriptions.
type countingSub struct {
	inner Subscriber[events.Event]
	live  atomic.Int32
}

func (c *countingSub) Subscribe() (<-chan events.Event, func()) {
	ch, cancel := c.inner.Subscribe()
	c.live.Add(1)
	var once atomic.Bool
	return ch, func() {
		if once.CompareAndSwap(false, true) {
			c.live.Add(-1)
		}
		cancel()
	}
}

func openStream(t *testing.T, ts *testServer) (*http.Response, *bufio.Reader, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/api/v1/vmm.events", nil)
	resp, err := ts.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("vmm.events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp, bufio.NewReader(resp.Body), cancel
}

func TestEventStream(t *testing.T) {
	mon := events.New(io.Discard)
	defer mon.Close()
	sub := &countingSub{inner: mon}
	ts := startServer(t, &fakeHandler{}, Options{Events: Events[events.Event](sub)})
	doc, _ := loadSpec(t)
	schema := doc.Components.Schemas["Event"].Value

	resp, br, cancel := openStream(t, ts)
	// The headers are flushed after subscribing, so nothing emitted from
	// now on is missed.
	if sub.live.Load() != 1 {
		t.Fatalf("%d live subscriptions", sub.live.Load())
	}
	mon.Emit("vm", "booted", nil)
	mon.Emit("virtio-device", "activated", map[string]string{"id": "__rng"})
	for _, want := range []struct{ source, event string }{{"vm", "booted"}, {"virtio-device", "activated"}} {
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if v["source"] != want.source || v["event"] != want.event {
			t.Errorf("got %s", line)
		}
		if err := schema.VisitJSON(v); err != nil {
			t.Errorf("event %s against the spec: %v", line, err)
		}
	}
	// The client hanging up ends the stream and its subscription.
	cancel()
	resp.Body.Close()
	mon.Emit("vm", "paused", nil) // lets the handler notice a dead write too
	ts.Shutdown(context.Background())
	if n := sub.live.Load(); n != 0 {
		t.Errorf("%d subscriptions left after the client left", n)
	}
}

func TestEventStreamEndsOnShutdown(t *testing.T) {
	mon := events.New(io.Discard)
	defer mon.Close()
	ts := startServer(t, &fakeHandler{}, Options{Events: Events[events.Event](mon)})
	resp, br, cancel := openStream(t, ts)
	defer cancel()
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	if _, err := br.ReadBytes('\n'); err == nil {
		t.Error("stream still open after Shutdown")
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestNoEventSource(t *testing.T) {
	ts := startServer(t, &fakeHandler{}, Options{})
	wantResp(t, do(t, ts.client(t), "GET", "vmm.events", nil), 404, `["Not Found"]`)
}
