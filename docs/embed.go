// Package docs embeds the documents the programs serve, so that what the
// API serves at /openapi.yaml is, byte for byte, the reviewed file in this
// folder (go:embed cannot reach a parent folder, hence a package here).
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml, the API's contract (OpenAPI 3.1).
//
//go:embed openapi.yaml
var OpenAPI []byte
