package openapitest

import (
	"bytes"
	"net/http"
	"testing"
)

func TestRequestInputAndResponse(t *testing.T) {
	doc, _ := Load(t)
	if doc.Paths.Find("/vm.info") == nil {
		t.Fatal("vm.info not in the document")
	}
	if _, err := RequestInput(t, mustRequest(t, "GET", "/api/v1/vm.nosuch"), nil); err == nil {
		t.Error("an undocumented path found a route")
	}
	in, err := RequestInput(t, mustRequest(t, "GET", "/api/v1/vm.info"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}}
	if err := ValidateResponse(in, bad, []byte(`{"state":"Sleeping"}`)); err == nil {
		t.Error("a vm.info reply without config and with an unknown state passed")
	}
}

func mustRequest(t *testing.T, method, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	return req
}
