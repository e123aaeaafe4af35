package client

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
)

// EventsEndpoint is Nimbus's event stream (not in upstream's API): a GET
// answered with one JSON event object per line, chunked, until the client
// goes away or the server closes.
const EventsEndpoint = "vmm.events"

// Events subscribes to the VMM's event stream. Events arrive on the
// returned channel in order; it is closed when the stream ends (the
// server closed it or failed) or when ctx is done. The goroutine reading
// the stream is owned by ctx: cancel ctx to stop it, and it exits without
// waiting for the channel to be drained.
func (c *Client) Events(ctx context.Context) (<-chan Event, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (<-chan Event, error) {
		stop()
		conn.Close()
		return nil, c.ctxErr(ctx, err)
	}
	if err := writeRequest(conn, http.MethodGet, EventsEndpoint, nil, nil); err != nil {
		return fail(err)
	}
	br := bufio.NewReader(conn)
	hr, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(&TransportError{Msg: MsgSocket, Err: err})
	}
	if hr.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(hr.Body, c.maxBody))
		_, hasLen := hr.Header["Content-Length"]
		stop()
		conn.Close()
		return nil, newAPIError(hr.StatusCode, body, hasLen)
	}
	// The deadline of the dial context applied to the handshake only; the
	// stream lives as long as ctx.
	conn.SetDeadline(noDeadline)

	ch := make(chan Event)
	go func() {
		defer close(ch)
		defer conn.Close()
		defer stop()
		// A decoder accepts one object per line and pretty-printed
		// objects alike.
		dec := json.NewDecoder(hr.Body)
		for {
			var ev Event
			if err := dec.Decode(&ev); err != nil {
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
