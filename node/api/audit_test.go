package api

import (
	"net/http"
	"strings"
	"testing"
)

// Every state-changing authenticated route has an audit operation, so a
// route added later cannot go unaudited.
func TestEveryStateChangingRouteIsAudited(t *testing.T) {
	e := newEnv(t)
	public := map[string]bool{"POST /api/v1/login": true, "POST /api/v1/enroll": true}
	seen := 0
	for _, rt := range e.api.routes {
		method, _, _ := strings.Cut(rt.pattern, " ")
		switch method {
		case http.MethodGet, http.MethodHead:
			if _, ok := auditOps[rt.pattern]; ok {
				t.Errorf("%s is a read but has an audit operation", rt.pattern)
			}
			continue
		}
		if public[rt.pattern] {
			continue
		}
		seen++
		if auditOps[rt.pattern] == "" {
			t.Errorf("%s changes state but has no audit operation", rt.pattern)
		}
	}
	if seen != len(auditOps) {
		t.Errorf("%d state-changing routes, %d audit operations: an operation names no route", seen, len(auditOps))
	}
}
