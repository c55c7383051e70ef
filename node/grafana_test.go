package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/releases"
	"github.com/strata-dm/strata/probes/sim"
)

// dashboardDir holds the Grafana dashboards (deploy/grafana).
const dashboardDir = "../deploy/grafana/dashboards"

// dashboardQuery is one PromQL expression of a dashboard, where it is.
type dashboardQuery struct {
	where string // file: panel or variable
	expr  string
}

// dashboardQueries reads every dashboard in dir and returns its panels'
// expressions and its query variables' selectors.
func dashboardQueries(t *testing.T, dir string) []dashboardQuery {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", dir, err)
	}
	var out []dashboardQuery
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID        string            `json:"uid"`
			Title      string            `json:"title"`
			Panels     []json.RawMessage `json:"panels"`
			Templating struct {
				List []struct {
					Name  string          `json:"name"`
					Type  string          `json:"type"`
					Query json.RawMessage `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: uid %q title %q, %d panels", f, d.UID, d.Title, len(d.Panels))
		}
		base := filepath.Base(f)
		var walk func(raw json.RawMessage)
		walk = func(raw json.RawMessage) {
			var p struct {
				Title   string            `json:"title"`
				Type    string            `json:"type"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: panel: %v", base, err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", base, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has a target without an expression", base, p.Title)
				}
				out = append(out, dashboardQuery{base + ": " + p.Title, tg.Expr})
			}
			for _, c := range p.Panels {
				walk(c)
			}
		}
		for _, p := range d.Panels {
			walk(p)
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			var s string
			if json.Unmarshal(v.Query, &s) != nil {
				if err := json.Unmarshal(v.Query, &q); err != nil {
					t.Fatalf("%s: variable %s: %v", base, v.Name, err)
				}
				s = q.Query
			}
			sel, err := variableSelector(s)
			if err != nil {
				t.Fatalf("%s: variable %s: %v", base, v.Name, err)
			}
			out = append(out, dashboardQuery{base + ": variable " + v.Name, sel})
		}
	}
	return out
}

// variableSelector returns the PromQL in a Grafana Prometheus variable
// query: label_values(SELECTOR, LABEL) or query_result(EXPR).
func variableSelector(q string) (string, error) {
	q = strings.TrimSpace(q)
	for _, fn := range []string{"label_values(", "query_result("} {
		if !strings.HasPrefix(q, fn) || !strings.HasSuffix(q, ")") {
			continue
		}
		inner := q[len(fn) : len(q)-1]
		if fn == "query_result(" {
			return inner, nil
		}
		// The label is after the last comma outside braces and strings.
		depth, cut, quote := 0, -1, byte(0)
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			switch {
			case quote != 0:
				if c == '\\' {
					i++
				} else if c == quote {
					quote = 0
				}
			case c == '"' || c == '\'':
				quote = c
			case c == '{' || c == '(':
				depth++
			case c == '}' || c == ')':
				depth--
			case c == ',' && depth == 0:
				cut = i
			}
		}
		if cut < 0 {
			return "", fmt.Errorf("%q names no metric: dashboards restrict label_values to a metric", q)
		}
		return inner[:cut], nil
	}
	return "", fmt.Errorf("%q: not label_values(...) or query_result(...)", q)
}

// promKeywords are PromQL words that are not metric names; the grouping
// ones are followed by a list of labels.
var promKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"atan2": true,
}

// promAggregations may take their grouping before their argument.
var promAggregations = map[string]bool{
	"sum": true, "avg": true, "count": true, "min": true, "max": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
}

// hasWordAt reports whether the identifier at expr[i:] is word.
func hasWordAt(expr string, i int, word string) bool {
	if !strings.HasPrefix(strings.ToLower(expr[i:]), word) {
		return false
	}
	j := i + len(word)
	return j == len(expr) || !(expr[j] == '_' || expr[j] == ':' || expr[j] >= 'a' && expr[j] <= 'z' || expr[j] >= 'A' && expr[j] <= 'Z' || expr[j] >= '0' && expr[j] <= '9')
}

var promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// promMetricNames returns the metric names an expression selects: every
// identifier that is not a function or aggregation (followed by "("), a
// keyword, a label in a grouping list, inside a label matcher ({...}),
// a range or subquery ([...]), a string, a number or a duration. A
// selector by {__name__=...} is refused: the test could not see its name.
func promMetricNames(expr string) ([]string, error) {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
			i++
		}
		return i
	}
	// skipString returns the index after the string starting at i.
	skipString := func(i int) (int, error) {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch expr[j] {
			case '\\':
				if q != '`' {
					j++
				}
			case q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d", i)
	}
	// skipTo returns the index after the close matching expr[i].
	skipTo := func(i int, close byte) (int, string, error) {
		open := expr[i]
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				k, err := skipString(j)
				if err != nil {
					return 0, "", err
				}
				j = k - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1, expr[i+1 : j], nil
				}
			}
		}
		return 0, "", fmt.Errorf("unclosed %q at %d", open, i)
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{':
			j, body, err := skipTo(i, '}')
			if err != nil {
				return nil, err
			}
			if strings.Contains(body, "__name__") {
				return nil, fmt.Errorf("a selector by __name__: name the metric instead")
			}
			i = j
		case c == '[':
			j, _, err := skipTo(i, ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// A number (1, 0.99, 1e-3, 0x1f) or a duration (5m, 1h30m).
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.' ||
				(expr[i] == '-' || expr[i] == '+') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case promGrouping[strings.ToLower(word)]:
				if next < len(expr) && expr[next] == '(' {
					k, _, err := skipTo(next, ')')
					if err != nil {
						return nil, err
					}
					j = k
				}
			case strings.ToLower(word) == "offset":
				// The duration that follows, possibly negative.
				k := next
				if k < len(expr) && expr[k] == '-' {
					k++
				}
				for k < len(expr) && isIdent(expr[k]) {
					k++
				}
				j = k
			case promKeywords[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(':
				// A function or an aggregation.
			case promAggregations[word] && (hasWordAt(expr, next, "by") || hasWordAt(expr, next, "without")):
				// An aggregation with its grouping first: sum by (l) (...).
			default:
				names = append(names, word)
			}
			i = j
		case c == '$':
			// A Grafana variable outside a string ($__interval in a
			// range is skipped with the range).
			i++
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '{' || expr[i] == '}') {
				i++
			}
		default:
			i++
		}
	}
	return names, nil
}

func TestPromMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (code) (rate(strata_api_requests_total{instance=~"$instance", code!~"2.."}[$__rate_interval]))`, []string{"strata_api_requests_total"}},
		{`histogram_quantile(0.99, sum without (instance) (rate(a_bucket[5m] offset -1h)))`, []string{"a_bucket"}},
		{`max by (node) (x * on (instance) group_left (node, role) y{role=~"$role"}) > bool 1e-3`, []string{"x", "y"}},
		{`sum without(le) (by_metric) + count by_total`, []string{"by_metric", "count", "by_total"}},
		{`count(a == 0) or vector(0)`, []string{"a"}},
		{`label_replace(m, "dst", "$1", "src", "(.*)") and ignoring(le) n`, []string{"m", "n"}},
		{`sum(rate(s_sum[1m])) / sum(rate(s_count[1m:30s]))  # mean`, []string{"s_sum", "s_count"}},
		{`topk(5, x) unless on() y offset 5m`, []string{"x", "y"}},
		{`a{b="}"} + c{d='{'}`, []string{"a", "c"}},
		{`0x1f + .5 + 1.5e+3 * NaN + Inf`, nil},
	} {
		got, err := promMetricNames(c.expr)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.expr, got, err, c.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `a{b="c}`, `rate(a[5m)`, `"x`} {
		if got, err := promMetricNames(bad); err == nil {
			t.Errorf("%s: %v, want an error", bad, got)
		}
	}
	for q, want := range map[string]string{
		`label_values(strata_node_info, node)`:                       `strata_node_info`,
		`label_values(strata_node_info{node=~"$node", x=","}, inst)`: `strata_node_info{node=~"$node", x=","}`,
		`query_result(max(up))`:                                      `max(up)`,
	} {
		if got, err := variableSelector(q); err != nil || got != want {
			t.Errorf("%s: %q %v", q, got, err)
		}
	}
	if _, err := variableSelector(`label_values(node)`); err == nil {
		t.Error("label_values without a metric accepted")
	}
}

// scrape returns a node's /metrics.
func scrape(t *testing.T, n *Node, caPEM []byte) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s %v", resp.Status, err)
	}
	return string(body)
}

// families returns the metric families of an exposition, by name, with
// their type.
func families(text string) map[string]string {
	fams := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	return fams
}

// exported reports whether name is a series of one of fams: a family, or
// the _bucket, _sum or _count series of a histogram (_sum and _count of a
// summary).
func exported(fams map[string]string, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		switch fams[base] {
		case "histogram":
			return true
		case "summary":
			return suf != "_bucket"
		}
	}
	return false
}

// TestDashboardMetricsExported: every metric the Grafana dashboards
// query is exported by running nodes. A hierarchy in process — hq (a
// Raft cluster of one replica, as the Helm chart runs a tier, with a
// federation listener) and a probe with MQTT, a connected device, a
// software cache and a webhook for alerts — does what the panels show:
// API requests, a device's session and messages, a link, a rollout of a
// signed release whose artifact the device downloads from the probe,
// which fetches it over the link, an alert of the device, notified. Then
// both nodes' /metrics together must name every metric of every query.
func TestDashboardMetricsExported(t *testing.T) {
	queries := dashboardQueries(t, dashboardDir)
	want := map[string][]string{} // metric -> where
	for _, q := range queries {
		names, err := promMetricNames(q.expr)
		if err != nil {
			t.Fatalf("%s: %q: %v", q.where, q.expr, err)
		}
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", q.where, q.expr)
		}
		for _, n := range names {
			want[n] = append(want[n], q.where)
		}
	}
	if len(want) < 30 {
		t.Fatalf("the dashboards name %d metrics; the tokenizer lost some?", len(want))
	}

	ctx := context.Background()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	hq := softwareNode(t, "hq", true, pub, func(c *config.Config) {
		c.Cluster = config.Cluster{ID: "hq-0", Addr: "127.0.0.1:0", Bootstrap: true,
			TLSCert: "tls/replica.crt", TLSKey: "tls/replica.key",
			HeartbeatTimeout: config.Duration(500 * time.Millisecond), ElectionTimeout: config.Duration(500 * time.Millisecond),
			LeaderLeaseTimeout: config.Duration(250 * time.Millisecond)}
	})
	hook := newWebhook(t)
	wait := config.Duration(50 * time.Millisecond)
	p1 := softwareNode(t, "p1", false, pub, func(c *config.Config) {
		c.Role = config.RoleProbe
		c.Software.CacheBudget = "10MB"
		c.Alerts.Receivers = []config.AlertReceiver{{Name: "ops", Webhook: &config.AlertWebhook{URL: hook.srv.URL}}}
		c.Alerts.Routes = []config.AlertRoute{{Receiver: "ops", GroupWait: &wait, GroupInterval: &wait}}
	})
	d := enrollSim(t, p1.n, "acme", "hw-1", "plant-7", "linux")
	if _, err := p1.n.model.Apply(ctx, model.Mutation{Op: model.OpPut, Path: d.e.Path,
		Functions: []model.Function{{Name: releases.InstallFunction}}, SetFunctions: true}); err != nil {
		t.Fatal(err)
	}
	d.connect(t, p1.n)
	joinNode(t, &p1.fedNode, &hq.fedNode, "p1", "operate", "/devices")
	path := "/peers/p1" + string(d.e.Path)
	tstest.WaitForErr(t, bulkWait, path+" at hq", func() (bool, error) {
		_, err := hq.admin.GetContext(ctx, path)
		return err == nil, err
	})
	fw := testRelease(t, hq.admin, key, "fw", "1.0", map[string]int{"amd64": 64 << 10})
	b, err := hq.admin.CreateBulkJob(ctx, client.NewBulkJob{Function: releases.InstallFunction,
		Args:   json.RawMessage(`{"release":"fw","version":"1.0"}`),
		Target: client.BulkTarget{Filter: map[string]string{"path": "/peers/p1", "type": "device"}}})
	if err != nil {
		t.Fatal(err)
	}
	if done := waitBulk(t, hq.admin, b.ID, client.BulkDone); done.Counters.Succeeded != 1 {
		t.Fatalf("rollout: %+v", done.Counters)
	}
	// The device downloads the artifact from its probe, which fetches it
	// over the link.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p1.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	dl := sim.Downloader{API: "https://" + p1.n.APIAddr(), Client: hc, Backoff: time.Millisecond}
	creds := sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: d.e.DeviceID, MQTTUsername: d.e.MQTTUsername, MQTTPassword: d.e.MQTTPassword}}
	for sum, want := range fw {
		var out bytes.Buffer
		if _, err := dl.Download(ctx, creds, sum, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("download from p1: %d bytes, %v", out.Len(), err)
		}
	}
	waitCached(t, p1.n, fw)
	// An alert of the device, notified to a webhook.
	if _, err := p1.admin.CreateAlertRule(ctx, client.AlertRule{Name: "hot", Kind: "threshold", Var: "temp", Op: ">",
		Value: ptr(80.0), For: "50ms", Severity: "critical"}); err != nil {
		t.Fatal(err)
	}
	d.telemetry(t, `{"temp": 95}`)
	waitAlert(t, p1.admin, string(d.e.Path), "firing")
	hook.waitMessages(t, 1)

	// Both nodes' families, once the link has reported its figures.
	var fams map[string]string
	var hqText string
	tstest.WaitFor(t, bulkWait, "the link's metrics on both sides", func() bool {
		hqText = scrape(t, hq.n, hq.ca)
		fams = families(hqText)
		p := families(scrape(t, p1.n, p1.ca))
		_, atHQ := fams["strata_federation_link_up"]
		_, atP1 := p["strata_federation_link_up"]
		for k, v := range p {
			fams[k] = v
		}
		return atHQ && atP1
	})
	var missing []string
	for name, where := range want {
		if !exported(fams, name) {
			missing = append(missing, fmt.Sprintf("%s (%s)", name, strings.Join(slices.Compact(where), "; ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("dashboards query metrics no node exports:\n  %s", strings.Join(missing, "\n  "))
	}
	if !strings.Contains(hqText, "\n"+`strata_node_info{node="hq",role="hq"} 1`+"\n") {
		t.Error("hq exports no strata_node_info with its name and role")
	}
}

// TestGrafanaProvisioning: the provisioning files decode, the dashboard
// provider loads files, and the data source is Prometheus with the uid
// the dashboards' data source variable finds by type.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string         `yaml:"name"`
			UID       string         `yaml:"uid"`
			Type      string         `yaml:"type"`
			Access    string         `yaml:"access"`
			URL       string         `yaml:"url"`
			IsDefault bool           `yaml:"isDefault"`
			Editable  bool           `yaml:"editable"`
			JSONData  map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	decodeStrictYAML(t, "../deploy/grafana/provisioning/datasources/strata.yaml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL == "" {
		t.Errorf("datasources: %+v", ds)
	}
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string         `yaml:"name"`
			OrgID                 int            `yaml:"orgId"`
			Folder                string         `yaml:"folder"`
			Type                  string         `yaml:"type"`
			DisableDeletion       bool           `yaml:"disableDeletion"`
			AllowUIUpdates        bool           `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int            `yaml:"updateIntervalSeconds"`
			Options               map[string]any `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeStrictYAML(t, "../deploy/grafana/provisioning/dashboards/strata.yaml", &dash)
	if dash.APIVersion != 1 || len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || dash.Providers[0].Options["path"] == nil {
		t.Errorf("dashboard providers: %+v", dash)
	}
	// Unique dashboard uids, unique panel ids within each.
	files, _ := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	uids := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				ID int `json:"id"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share uid %q", f, other, d.UID)
		}
		uids[d.UID] = f
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel id %d repeated or missing", f, p.ID)
			}
			ids[p.ID] = true
		}
	}
}

func decodeStrictYAML(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}
