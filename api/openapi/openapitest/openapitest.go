// Package openapitest loads nimbus.yaml for tests that check exchanges
// against it (internal/api's server tests, test/interop's client replays),
// so both validate with the same document, router and options.
package openapitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/nimbus-vmm/nimbus/api/openapi"
)

var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// Load returns nimbus.yaml parsed and validated, and a router over it. The
// document is loaded once per test binary; an invalid one fails t.
func Load(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	spec.once.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(openapi.Spec)
		if err != nil {
			spec.err = fmt.Errorf("loading api/openapi/nimbus.yaml: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			spec.err = fmt.Errorf("api/openapi/nimbus.yaml is not a valid OpenAPI document: %w", err)
			return
		}
		spec.doc = doc
		spec.router, spec.err = gorillamux.NewRouter(doc)
	})
	if spec.err != nil {
		t.Fatal(spec.err)
	}
	return spec.doc, spec.router
}

// RequestInput finds the documented route of req and returns the input
// that validates it: a copy of req whose body is body, with defaults not
// filled in (the server applies them) and only the first error reported.
// The error is the router's when the document has no such route.
func RequestInput(t testing.TB, req *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	t.Helper()
	_, router := Load(t)
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := router.FindRoute(r)
	if err != nil {
		return nil, err
	}
	opts := &openapi3filter.Options{SkipSettingDefaults: true, MultiError: false}
	return &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}, nil
}

// ValidateResponse checks a reply (status, header and body) against the
// route and options of in.
func ValidateResponse(in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) error {
	return openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                in.Options,
	})
}
