// Package events is Nimbus's event monitor: the stream of lifecycle events
// that Cloud Hypervisor writes to --event-monitor and that the API serves
// on GET /api/v1/vmm.events. It mirrors upstream's event_monitor/src/lib.rs.
package events

import (
	"bytes"
	"encoding/json"
	"time"
)

// Timestamp is a Rust core::time::Duration as serde serializes it:
// {"secs":u64,"nanos":u32}. Events carry the time since the monitor started.
type Timestamp struct {
	Secs  uint64 `json:"secs"`
	Nanos uint32 `json:"nanos"`
}

// TimestampOf converts a non-negative duration (negative ones clamp to 0).
func TimestampOf(d time.Duration) Timestamp {
	if d < 0 {
		d = 0
	}
	return Timestamp{Secs: uint64(d / time.Second), Nanos: uint32(d % time.Second)}
}

// Duration converts back to a time.Duration.
func (t Timestamp) Duration() time.Duration {
	return time.Duration(t.Secs)*time.Second + time.Duration(t.Nanos)
}

// Event is one monitor event (upstream's Event struct). Properties is
// nil, serialized as "properties": null, when the event has none.
type Event struct {
	Timestamp  Timestamp         `json:"timestamp"`
	Source     string            `json:"source"`
	Event      string            `json:"event"`
	Properties map[string]string `json:"properties"`
}

// Bytes is the event as upstream writes it to the monitor file:
// serde_json::to_string_pretty (2-space indent, "key": value) followed by
// a blank line ("\n\n"), which is what consumers split on. Go sorts the
// property keys; upstream's HashMap order is unspecified, so any order is
// compatible.
func (e Event) Bytes() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// serde_json does not escape <, > and &.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(e); err != nil {
		// Only strings and a map of strings: encoding cannot fail.
		panic("events: encoding an Event failed: " + err.Error())
	}
	// Encode ends with "\n"; one more makes the blank line.
	buf.WriteByte('\n')
	return buf.Bytes()
}
