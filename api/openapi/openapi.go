// Package openapi holds Nimbus's OpenAPI 3 document, nimbus.yaml, which
// describes the REST API as Nimbus serves it (see internal/api).
package openapi

import _ "embed"

// Spec is the OpenAPI document (YAML), served at GET /api/v1/openapi.yaml.
//
//go:embed nimbus.yaml
var Spec []byte
