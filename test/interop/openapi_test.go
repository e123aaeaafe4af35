package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/nimbus-vmm/nimbus/api/openapi/openapitest"
)

// specCheck is the OpenAPI cross-check: every request a client sends must
// be one nimbus.yaml describes, with no field the document lacks (kin-openapi
// alone accepts unknown fields wherever the schema does not forbid them,
// so a field Kata sends and the document forgot would pass unnoticed), and
// every reply must match the document.
type specCheck struct {
	t    testing.TB
	next http.RoundTripper
}

func (s *specCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	rbody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(rbody))
	if err != nil {
		return resp, err
	}
	for _, p := range checkExchange(s.t, req, body, resp, rbody) {
		s.t.Errorf("OpenAPI cross-check: %s", p)
	}
	return resp, nil
}

// knownUndocumented are the fields real clients send that nimbus.yaml
// lacks, each with why it is tolerated for now (reported, not fixed here:
// api/openapi is not this package's to change).
var knownUndocumented = map[string]string{
	// Kata's NewConsoleConfig always sends iommu; upstream's serial is a
	// ConsoleConfig with iommu, Nimbus's SerialConfig (and the document)
	// has none, so the server drops it and vm.info does not echo it.
	"PUT /api/v1/vm.create /serial/iommu": "SerialConfig lacks iommu",
}

// checkExchange returns what is wrong with one exchange against the
// document: request validation errors, fields the document does not
// describe, and response validation errors.
func checkExchange(t testing.TB, req *http.Request, body []byte, resp *http.Response, rbody []byte) []string {
	t.Helper()
	problems, in := checkRequest(t, req, body)
	if in == nil {
		return problems
	}
	if err := openapitest.ValidateResponse(in, resp, rbody); err != nil {
		problems = append(problems, fmt.Sprintf("%s %s: reply %d %q does not match: %v", req.Method, req.URL.Path, resp.StatusCode, rbody, err))
	}
	return problems
}

// checkRequest validates one request and lists undocumented fields; the
// returned input (nil when the route is unknown) serves the reply check.
func checkRequest(t testing.TB, req *http.Request, body []byte) ([]string, *openapi3filter.RequestValidationInput) {
	t.Helper()
	in, err := openapitest.RequestInput(t, req, body)
	if err != nil {
		return []string{fmt.Sprintf("%s %s: not in the document: %v", req.Method, req.URL.Path, err)}, nil
	}
	var problems []string
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		problems = append(problems, fmt.Sprintf("%s %s: request rejected: %v", req.Method, req.URL.Path, err))
	}
	if rb := in.Route.Operation.RequestBody; rb != nil && len(body) > 0 {
		if mt := rb.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil {
			var v any
			if err := json.Unmarshal(body, &v); err == nil {
				for _, f := range undocumented(mt.Schema.Value, v, "") {
					if knownUndocumented[req.Method+" "+req.URL.Path+" "+f] != "" {
						continue
					}
					problems = append(problems, fmt.Sprintf("%s %s: field %s is not in the document", req.Method, req.URL.Path, f))
				}
			}
		}
	}
	in.Request.Body = io.NopCloser(bytes.NewReader(body))
	return problems, in
}

// undocumented lists the JSON paths in v that schema s does not describe
// (a property no schema in s, or its allOf/oneOf/anyOf parts, names, where
// no additionalProperties schema covers it).
func undocumented(s *openapi3.Schema, v any, path string) []string {
	if s == nil {
		return nil
	}
	var out []string
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sub, ok := propertySchema(s, k)
			if !ok {
				out = append(out, path+"/"+k)
				continue
			}
			out = append(out, undocumented(sub, v[k], path+"/"+k)...)
		}
	case []any:
		items := itemsSchema(s)
		for i, e := range v {
			out = append(out, undocumented(items, e, fmt.Sprintf("%s/%d", path, i))...)
		}
	}
	return out
}

// parts is s with its composed schemas.
func parts(s *openapi3.Schema) []*openapi3.Schema {
	all := []*openapi3.Schema{s}
	for _, list := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, r := range list {
			if r != nil && r.Value != nil {
				all = append(all, parts(r.Value)...)
			}
		}
	}
	return all
}

func propertySchema(s *openapi3.Schema, name string) (*openapi3.Schema, bool) {
	open := false
	var extra *openapi3.Schema
	for _, p := range parts(s) {
		if r, ok := p.Properties[name]; ok && r != nil {
			return r.Value, true
		}
		if ap := p.AdditionalProperties; ap.Schema != nil && ap.Schema.Value != nil {
			extra = ap.Schema.Value
		} else if ap.Has != nil && *ap.Has {
			open = true
		}
		if len(p.Properties) == 0 && p.AdditionalProperties.Has == nil && p.AdditionalProperties.Schema == nil &&
			len(p.AllOf)+len(p.OneOf)+len(p.AnyOf) == 0 && (p.Type == nil || p.Type.Is("object")) && p != s {
			open = true // a free-form object part
		}
	}
	if extra != nil {
		return extra, true
	}
	return nil, open
}

func itemsSchema(s *openapi3.Schema) *openapi3.Schema {
	for _, p := range parts(s) {
		if p.Items != nil && p.Items.Value != nil {
			return p.Items.Value
		}
	}
	return nil
}

// TestCrossCheckCatchesUnknownField proves the check is not vacuous: a
// field the document lacks is reported, a documented one is not.
func TestCrossCheckCatchesUnknownField(t *testing.T) {
	doc, _ := openapitest.Load(t)
	vm := doc.Components.Schemas["VmConfig"]
	if vm == nil {
		t.Fatal("nimbus.yaml has no VmConfig schema")
	}
	var v any
	json.Unmarshal([]byte(`{"payload":{"kernel":"/k","no_such_field":1},"disks":[{"path":"/d","bogus":true}],"cpus":{"boot_vcpus":1,"max_vcpus":1}}`), &v)
	got := strings.Join(undocumented(vm.Value, v, ""), " ")
	if got != "/disks/0/bogus /payload/no_such_field" {
		t.Errorf("undocumented = %q", got)
	}
}
