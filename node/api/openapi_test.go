package api

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIDocsCopy keeps docs/openapi.json equal to the embedded
// document; after changing node/api/openapi.json, copy it there.
func TestOpenAPIDocsCopy(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, openAPI) {
		t.Fatal("docs/openapi.json differs from node/api/openapi.json: cp node/api/openapi.json docs/openapi.json")
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components map[string]map[string]json.RawMessage `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	e := newEnv(t)
	documented := map[string]bool{}
	for p, item := range doc.Paths {
		for method := range item {
			if method != "parameters" {
				documented[strings.ToUpper(method)+" "+p] = true
			}
		}
	}
	served := map[string]bool{}
	for _, rt := range e.api.routes {
		method, _, _ := strings.Cut(rt.pattern, " ")
		key := method + " " + rt.doc
		served[key] = true
		if !documented[key] {
			t.Errorf("route %s (%s) is not in openapi.json", rt.pattern, key)
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("openapi.json documents %s, which is not served", key)
		}
	}
	// Every reference resolves.
	var refs []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					refs = append(refs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var all any
	json.Unmarshal(openAPI, &all)
	walk(all)
	for _, ref := range refs {
		parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
		if len(parts) != 2 || doc.Components[parts[0]][parts[1]] == nil {
			t.Errorf("unresolved $ref %s", ref)
		}
	}
	// Every error code the API answers with is in the Error schema.
	var errSchema struct {
		Properties struct {
			Code struct {
				Enum []string `json:"enum"`
			} `json:"code"`
		} `json:"properties"`
	}
	json.Unmarshal(doc.Components["schemas"]["Error"], &errSchema)
	for _, code := range []string{codeInvalid, codeUnauthorized, codeForbidden, codeNotFound, codeConflict, codeTooLarge,
		codeRateLimited, codeUnavailable, codeInternal, codeNotImplemented, codeMethodNotAllowed} {
		if !slices.Contains(errSchema.Properties.Code.Enum, code) {
			t.Errorf("error code %q is not in the Error schema", code)
		}
	}

	r := e.do("GET", "/api/v1/openapi.json", "", nil)
	e.want(r, 200, "")
	if !bytes.Equal(r.body, openAPI) || !bytes.Equal(OpenAPI(), openAPI) {
		t.Fatal("served document differs from the embedded one")
	}
}
