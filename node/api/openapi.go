package api

import (
	_ "embed"
	"net/http"
)

// openAPI is this API as an OpenAPI 3.1 document. The canonical file is
// openapi.json beside this one; docs/openapi.json is a copy (a test keeps
// them equal), since embedding cannot reach outside the package.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3.1 document (JSON).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(openAPI)
}
