package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/nimbus-vmm/nimbus/api/openapi"
	"github.com/nimbus-vmm/nimbus/api/openapi/openapitest"
)

var registerDecoders sync.Once

// loadSpec loads nimbus.yaml (once) and registers the decoders for the
// bodies that are not JSON: the first line of a vmm.events stream and the
// document itself.
func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	registerDecoders.Do(func() {
		openapi3filter.RegisterBodyDecoder("application/x-ndjson", ndjsonDecoder)
		openapi3filter.RegisterBodyDecoder("application/yaml", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(r)
			return string(b), err
		})
	})
	return openapitest.Load(t)
}

// ndjsonDecoder decodes the first event of a vmm.events stream; each line
// is checked separately by the events test.
func ndjsonDecoder(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	line, err := bufio.NewReader(r).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, err
	}
	var v any
	err = json.Unmarshal(line, &v)
	return v, err
}

// validatingTransport checks every exchange against the OpenAPI document.
type validatingTransport struct {
	t    testing.TB
	next http.RoundTripper
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := v.next.RoundTrip(req)
	if err != nil || resp.Header.Get("Content-Type") == "application/x-ndjson" {
		return resp, err // streams are checked by their test
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	validate(v.t, req, reqBody, resp, body)
	return resp, nil
}

// checkExchange validates a raw request (as written to the socket) and
// its response.
func checkExchange(t testing.TB, rawReq []byte, resp *http.Response, body []byte) {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(rawReq)))
	if err != nil {
		t.Fatalf("raw request: %v", err)
	}
	reqBody, _ := io.ReadAll(req.Body)
	req.URL.Scheme, req.URL.Host = "http", req.Host
	validate(t, req, reqBody, resp, body)
}

// validate checks one exchange: a request the document rejects must have
// been refused with 400; a response must be one the document describes.
func validate(t testing.TB, req *http.Request, reqBody []byte, resp *http.Response, body []byte) {
	t.Helper()
	doc, _ := loadSpec(t)
	r := req.Clone(context.Background())
	if r.Header.Get("Content-Type") == "" && len(reqBody) > 0 {
		// ch-remote sends none; the server treats the body as JSON.
		r.Header.Set("Content-Type", "application/json")
	}
	in, err := openapitest.RequestInput(t, r, reqBody)
	if err != nil {
		// Unknown path or method: the shared error responses apply.
		name := map[int]string{404: "NotFound", 400: "BadRequestOrEmpty"}[resp.StatusCode]
		if name == "" {
			t.Errorf("%s %s: no route in the spec, and status %d is not 400/404", req.Method, req.URL.Path, resp.StatusCode)
			return
		}
		if len(body) == 0 && resp.StatusCode == 400 {
			return
		}
		schema := doc.Components.Responses[name].Value.Content.Get("application/json").Schema.Value
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("%s %s: %d body is not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, body)
		} else if err := schema.VisitJSON(v); err != nil {
			t.Errorf("%s %s: %d body against %s: %v", req.Method, req.URL.Path, resp.StatusCode, name, err)
		}
		return
	}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("%s %s: request rejected by the spec (%v) but answered %d", req.Method, req.URL.Path, err, resp.StatusCode)
	}
	if len(body) == 0 && resp.StatusCode == 400 {
		in.Options.ExcludeResponseBody = true // the documented bare 400
	}
	if err := openapitest.ValidateResponse(in, resp, body); err != nil {
		t.Errorf("%s %s: response %d %q does not match the spec: %v", req.Method, req.URL.Path, resp.StatusCode, body, err)
	}
}

func TestSpecIsValid(t *testing.T) {
	doc, _ := loadSpec(t)
	// Every route the server has is documented, and nothing more.
	for name := range routes {
		if doc.Paths.Find("/"+name) == nil {
			t.Errorf("route %s is not in the spec", name)
		}
	}
	for path := range doc.Paths.Map() {
		name := path[1:]
		if routes[name] == nil && name != "vmm.events" && name != "openapi.yaml" {
			t.Errorf("spec path %s is not served", path)
		}
	}
}

func TestSpecServed(t *testing.T) {
	ts := startServer(t, &fakeHandler{}, Options{})
	r := do(t, ts.client(t), "GET", "openapi.yaml", nil)
	if r.StatusCode != 200 || !bytes.Equal(r.body, openapi.Spec) || r.Header.Get("Content-Type") != "application/yaml" {
		t.Errorf("openapi.yaml: %d %q, %d bytes", r.StatusCode, r.Header.Get("Content-Type"), len(r.body))
	}
}

// TestSpecCatchesDrift checks that the validator used by every test
// rejects a reply that is not what the spec describes.
func TestSpecCatchesDrift(t *testing.T) {
	ft := &fakeT{TB: t}
	req, _ := http.NewRequest("GET", "http://localhost/api/v1/vm.info", nil)
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}}
	validate(ft, req, nil, resp, []byte(`{"state":"Sleeping"}`))
	if !ft.failed {
		t.Error("an invalid vm.info reply passed validation")
	}
	ft = &fakeT{TB: t}
	req, _ = http.NewRequest("PUT", "http://localhost/api/v1/vm.resize-disk", bytes.NewReader(nil))
	validate(ft, req, []byte(`{"id":"d"}`), &http.Response{StatusCode: 204, Header: http.Header{}}, nil)
	if !ft.failed {
		t.Error("a spec-invalid request answered 204 passed validation")
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Helper()               {}
