package client

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Texts of upstream's api_client::Error variants, used as the Msg of a
// TransportError so that nimbus-remote prints the same chain as ch-remote.
const (
	MsgSocket  = "Error writing to or reading from HTTP socket"
	MsgSendFds = "Error sending file descriptors"
	MsgConnect = "Error opening HTTP socket"
)

// TransportError is a failure to exchange a request and reply with the
// server: connecting, writing, sending fds, reading or parsing the reply.
type TransportError struct {
	Msg string // one of the Msg* constants
	Err error  // the underlying cause
}

func (e *TransportError) Error() string { return e.Msg + ": " + e.Err.Error() }

// Unwrap returns the underlying cause.
func (e *TransportError) Unwrap() error { return e.Err }

// APIError is a reply whose status is not a success (anything but 200,
// 204 and 100, as upstream's api_client decides).
type APIError struct {
	// StatusCode is the HTTP status of the reply.
	StatusCode int
	// Messages is the server's JSON error array: the error chain from the
	// top error to its root cause, e.g. ["Error from API","The VM info is
	// not available","VM is not created"]. Nil when the body was not such
	// an array (see DecodeErr).
	Messages []string
	// Body is the raw reply body.
	Body []byte
	// HasBody reports whether the reply carried a Content-Length.
	HasBody bool
	// DecodeErr says why Body could not be decoded as a JSON string array.
	DecodeErr error
}

func newAPIError(code int, body []byte, hasBody bool) *APIError {
	e := &APIError{StatusCode: code, Body: body, HasBody: hasBody}
	if len(body) == 0 {
		// serde_json's text for an empty document; ch-remote prints it.
		e.DecodeErr = fmt.Errorf("EOF while parsing a value at line 1 column 0")
		return e
	}
	var msgs []string
	if err := json.Unmarshal(body, &msgs); err != nil {
		e.DecodeErr = err
		return e
	}
	if msgs == nil {
		msgs = []string{}
	}
	e.Messages = msgs
	return e
}

// Status is upstream's Debug spelling of the status (api_client's
// StatusCode enum), e.g. "NotFound"; 409 and other unlisted codes are
// "Unknown".
func (e *APIError) Status() string { return StatusName(e.StatusCode) }

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server responded with %s (%d)", e.Status(), e.StatusCode)
	if len(e.Messages) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Messages, ": "))
	} else if len(e.Body) > 0 {
		fmt.Fprintf(&b, ": %q", e.Body)
	}
	return b.String()
}

// StatusName returns upstream api_client's name for an HTTP status code:
// the Debug text of its StatusCode enum.
func StatusName(code int) string {
	switch code {
	case 100:
		return "Continue"
	case 200:
		return "Ok"
	case 204:
		return "NoContent"
	case 400:
		return "BadRequest"
	case 404:
		return "NotFound"
	case 429:
		return "TooManyRequests"
	case 500:
		return "InternalServerError"
	case 501:
		return "NotImplemented"
	default:
		return "Unknown"
	}
}
