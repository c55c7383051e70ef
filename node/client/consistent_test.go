package client

import (
	"context"
	"net/http"
	"testing"
)

// A consistent client asks every read for consistent=true, keeping the
// read's own parameters, and leaves writes as they are; the client it was
// made from is unchanged.
func TestConsistentClient(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "GET":
			writeJSON(w, 200, `{"path":"/devices","type":"folder"}`)
		default:
			writeJSON(w, 201, `{"path":"/devices/p1","type":"device"}`)
		}
	})
	plain := f.client("tok")
	c := plain.Consistent()
	ctx := context.Background()
	if _, err := c.Tree(ctx, "/devices", TreeOptions{Limit: 5}); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.last(); got != "GET /api/v1/tree?consistent=true&limit=5&path=%2Fdevices" {
		t.Fatalf("consistent tree: %s", got)
	}
	if _, err := c.GetContextConsistent(ctx, "/devices"); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.last(); got != "GET /api/v1/contexts/devices?consistent=true" {
		t.Fatalf("consistent get: %s", got)
	}
	if _, _, err := c.PutContext(ctx, "/devices/p1", ContextUpdate{Type: "device"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.last(); got != "PUT /api/v1/contexts/devices/p1" {
		t.Fatalf("write: %s", got)
	}
	if _, err := plain.GetContext(ctx, "/devices"); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.last(); got != "GET /api/v1/contexts/devices" {
		t.Fatalf("the plain client: %s", got)
	}
}
