package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFederation(t *testing.T) {
	c, err := Parse([]byte(`name: plant7
role: probe
federation:
  upstreams:
    - address: eu.example:7443
      token: sfj1.abc
      publish: [/devices, /groups/line-3]
    - address: "[2001:db8::1]:7443"
  keepalive: 2s
  idle_timeout: 20s
  cert_validity: 240h
  log_budget: 100000
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Federation{
		Upstreams: []Upstream{
			{Address: "eu.example:7443", Token: "sfj1.abc", Publish: []string{"/devices", "/groups/line-3"}},
			{Address: "[2001:db8::1]:7443"},
		},
		KeepAlive: Duration(2 * time.Second), IdleTimeout: Duration(20 * time.Second),
		CertValidity: Duration(240 * time.Hour), LogBudget: 100000,
	}
	if !reflect.DeepEqual(c.Federation, want) {
		t.Fatalf("federation = %+v, want %+v", c.Federation, want)
	}
	if ps := c.Federation.Upstreams[0].PublishPaths(); len(ps) != 2 || ps[1] != "/groups/line-3" {
		t.Fatalf("PublishPaths = %v", ps)
	}

	d := Default().Federation
	if d.Addr != "" || d.KeepAlive.D() != 5*time.Second || d.IdleTimeout.D() != 30*time.Second ||
		d.CertValidity.D() != 720*time.Hour || d.LogBudget != 5_000_000 {
		t.Fatalf("defaults = %+v", d)
	}
	for _, bad := range []string{
		"federation:\n  upstream: []\n",
		"federation:\n  upstreams:\n    - address: a:1\n      publsh: [/x]\n",
		"federation:\n  keepalive: soon\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestValidateFederation(t *testing.T) {
	for _, tc := range []struct {
		name string
		fed  func(*Federation)
		err  string // substring; "" means valid
	}{
		{"defaults", func(*Federation) {}, ""},
		{"listener", func(f *Federation) { f.Addr = ":7443" }, ""},
		{"bad listener", func(f *Federation) { f.Addr = "7443" }, "federation.addr"},
		{"upstream", func(f *Federation) { f.Upstreams = []Upstream{{Address: "hq.example:7443", Publish: []string{"/"}}} }, ""},
		{"upstream no port", func(f *Federation) { f.Upstreams = []Upstream{{Address: "hq.example"}} }, "federation.upstreams[0].address"},
		{"upstream no host", func(f *Federation) { f.Upstreams = []Upstream{{Address: ":7443"}} }, "no host"},
		{"upstream wildcard", func(f *Federation) { f.Upstreams = []Upstream{{Address: "0.0.0.0:7443"}} }, "not an address to dial"},
		{"upstream bad host", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a b:1"}} }, "not a host name"},
		{"upstream bad port", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:http"}} }, "port"},
		{"upstream twice", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:1"}, {Address: "a:1"}} }, "federation.upstreams[1].address: a:1 is listed twice"},
		{"replicas", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:1", Replicas: []string{"b:1", "c:1"}}} }, ""},
		{"bad replica", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:1", Replicas: []string{"nohost"}}} }, "federation.upstreams[0].replicas[0]"},
		{"replica twice", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:1", Replicas: []string{"b:1", "a:1"}}} }, "federation.upstreams[0].replicas[1]: a:1 is listed twice"},
		{"bad publish", func(f *Federation) {
			f.Upstreams = []Upstream{{Address: "a:1", Publish: []string{"/devices", "/a/../b"}}}
		}, "federation.upstreams[0].publish[1]"},
		{"publish not canonical", func(f *Federation) { f.Upstreams = []Upstream{{Address: "a:1", Publish: []string{"devices/"}}} }, "write it as /devices"},
		{"zero keepalive", func(f *Federation) { f.KeepAlive = 0 }, "federation.keepalive"},
		{"negative idle", func(f *Federation) { f.IdleTimeout = Duration(-time.Second) }, "federation.idle_timeout"},
		{"keepalive not below idle", func(f *Federation) { f.KeepAlive = f.IdleTimeout }, "must be below federation.idle_timeout"},
		{"zero validity", func(f *Federation) { f.CertValidity = 0 }, "federation.cert_validity"},
		{"zero budget", func(f *Federation) { f.LogBudget = 0 }, "federation.log_budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.fed(&c.Federation)
			err := c.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.err != "" && err == nil:
				t.Fatalf("Validate passed, want %q", tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Fatalf("Validate: %v, want %q", err, tc.err)
			}
		})
	}
}

func TestFederationEnvAndMarshal(t *testing.T) {
	env := map[string]string{"STRATA_FEDERATION_KEEPALIVE": "1s", "STRATA_FEDERATION_LOG_BUDGET": "42"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c := validConfig()
	if err := c.ApplyEnv(lookup); err != nil {
		t.Fatal(err)
	}
	if c.Federation.KeepAlive.D() != time.Second || c.Federation.LogBudget != 42 {
		t.Fatalf("federation = %+v", c.Federation)
	}
	env["STRATA_FEDERATION_UPSTREAMS"] = "a:1"
	c = validConfig()
	if err := c.ApplyEnv(lookup); err == nil || !strings.Contains(err.Error(), "STRATA_FEDERATION_UPSTREAMS") {
		t.Fatalf("a list from the environment: %v", err)
	}

	c = validConfig()
	c.Federation.Upstreams = []Upstream{{Address: "hq.example:7443", Token: "t", Publish: []string{"/devices"}}}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Federation, c.Federation) {
		t.Fatalf("round trip:\n%s\n%+v, want %+v", out, back.Federation, c.Federation)
	}
}
