package api

import (
	"context"
	"encoding/json"
	"net/http"
)

// Subscriber is a source of events. *events.Monitor satisfies
// Subscriber[events.Event]: Subscribe returns a channel of events and a
// function that ends the subscription (and closes or abandons the channel).
type Subscriber[E any] interface {
	Subscribe() (<-chan E, func())
}

// EventSource runs one event stream: it calls ready once subscribed, then
// emit for each event until ctx ends, the source ends, or emit fails.
// Build one with Events.
type EventSource func(ctx context.Context, ready func(), emit func(event any) error) error

// Events adapts a Subscriber to the server's event stream.
func Events[E any](s Subscriber[E]) EventSource {
	return func(ctx context.Context, ready func(), emit func(any) error) error {
		ch, cancel := s.Subscribe()
		defer cancel()
		ready()
		for {
			select {
			case <-ctx.Done():
				return nil
			case e, ok := <-ch:
				if !ok {
					return nil
				}
				if err := emit(e); err != nil {
					return err
				}
			}
		}
	}
}

// serveEvents streams events as newline-delimited JSON (one compact object
// per line, chunked) until the client goes away or the server closes.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusBadRequest, []string{"Bad Request"})
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.stop, cancel)
	defer stop()

	rc := http.NewResponseController(w)
	w.Header()["Content-Type"] = []string{"application/x-ndjson"}
	enc := json.NewEncoder(w) // Encode ends each value with '\n'
	enc.SetEscapeHTML(false)  // as serde_json
	err := s.opts.Events(ctx, func() {
		// Headers go out once subscribed, so a client that has them
		// misses no event emitted afterwards.
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			cancel()
		}
	}, func(e any) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil {
		s.logf("api: vmm.events: %v", err)
	}
}
