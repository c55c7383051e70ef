// Package helm holds the tests of the strata Helm chart (./strata). It is
// a module of its own so that the main module does not depend on Helm and
// the Kubernetes API modules; `make test` runs it too.
package helm

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	chartDir  = "strata"
	namespace = "strata"
)

// decoder decodes every manifest strictly against the Kubernetes API
// types the chart uses: an unknown or duplicated field, a wrong type or
// a kind not registered here is an error.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// rendered is one release of the chart, decoded.
type rendered struct {
	sts      *appsv1.StatefulSet
	services map[string]*corev1.Service
	cms      map[string]*corev1.ConfigMap
	secrets  map[string]*corev1.Secret
	pdbs     []*policyv1.PodDisruptionBudget
	netpols  []*networkingv1.NetworkPolicy
	values   map[string]any
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// renderChart renders the chart as `helm template NAME strata -f FILE
// --set ...` would, with the values of files (merged in order) then set.
func renderChart(t *testing.T, c *chart.Chart, release string, files []string, set map[string]any) (map[string]string, map[string]any, error) {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(filepath.Join(chartDir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vals = util.MergeTables(v, vals)
	}
	vals = util.MergeTables(set, vals)
	top, err := util.ToRenderValues(c, vals, common.ReleaseOptions{
		Name: release, Namespace: namespace, Revision: 1, IsInstall: true,
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(c, top)
	if err != nil {
		return nil, nil, err
	}
	merged, _ := top["Values"].(common.Values)
	return out, merged.AsMap(), nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeAll decodes every object of a rendering strictly.
func decodeAll(t *testing.T, out map[string]string) *rendered {
	t.Helper()
	r := &rendered{
		services: map[string]*corev1.Service{},
		cms:      map[string]*corev1.ConfigMap{},
		secrets:  map[string]*corev1.Secret{},
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, file := range names {
		if !strings.HasSuffix(file, ".yaml") {
			continue // NOTES.txt, _helpers.tpl
		}
		for i, doc := range docSep.Split(out[file], -1) {
			if isBlank(doc) {
				continue
			}
			obj, gvk, err := decoder.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s, document %d: %v\n%s", file, i, err, doc)
			}
			if gvk.Kind == "" || gvk.Version == "" {
				t.Fatalf("%s, document %d: no apiVersion/kind", file, i)
			}
			switch o := obj.(type) {
			case *appsv1.StatefulSet:
				if r.sts != nil {
					t.Fatalf("two StatefulSets")
				}
				r.sts = o
			case *corev1.Service:
				r.services[o.Name] = o
			case *corev1.ConfigMap:
				r.cms[o.Name] = o
			case *corev1.Secret:
				r.secrets[o.Name] = o
			case *policyv1.PodDisruptionBudget:
				r.pdbs = append(r.pdbs, o)
			case *networkingv1.NetworkPolicy:
				r.netpols = append(r.netpols, o)
			default:
				t.Fatalf("%s: unexpected kind %s", file, gvk)
			}
			checkMeta(t, file, gvk.Kind, obj)
		}
	}
	if r.sts == nil {
		t.Fatal("no StatefulSet rendered")
	}
	return r
}

func isBlank(doc string) bool {
	for _, l := range strings.Split(doc, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// checkMeta checks what the API server would refuse in every object's
// metadata: names that are not DNS labels, labels that are not valid.
func checkMeta(t *testing.T, file, kind string, obj runtime.Object) {
	t.Helper()
	m, ok := obj.(interface {
		GetName() string
		GetLabels() map[string]string
	})
	if !ok {
		t.Fatalf("%s: %s has no metadata", file, kind)
	}
	if errs := validation.IsDNS1123Label(m.GetName()); len(errs) > 0 {
		t.Errorf("%s: %s name %q: %v", file, kind, m.GetName(), errs)
	}
	checkLabels(t, file+": "+kind+" "+m.GetName(), m.GetLabels())
}

func checkLabels(t *testing.T, what string, labels map[string]string) {
	t.Helper()
	for k, v := range labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			t.Errorf("%s: label key %q: %v", what, k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("%s: label %s=%q: %v", what, k, v, errs)
		}
	}
}

// roleFiles are the values files per role, each rendered on its own.
var roleFiles = []string{"values-hq.yaml", "values-regional.yaml", "values-probe.yaml", "values-reporting.yaml"}

func TestRoleValuesFilesExist(t *testing.T) {
	got, err := filepath.Glob(filepath.Join(chartDir, "values-*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	want := slices.Clone(roleFiles)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("values files %v, the test renders %v", got, want)
	}
}

func TestRenderRoles(t *testing.T) {
	c := loadChart(t)
	for _, f := range roleFiles {
		role := strings.TrimSuffix(strings.TrimPrefix(f, "values-"), ".yaml")
		t.Run(role, func(t *testing.T) {
			out, vals, err := renderChart(t, c, "strata-"+role, []string{f}, nil)
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			r := decodeAll(t, out)
			r.values = vals
			if got := nested(vals, "node", "role"); got != role {
				t.Fatalf("%s sets node.role %v", f, got)
			}
			checkRelease(t, r)
		})
	}
}

// TestRenderInlineSecrets renders the defaults with the TLS material and
// the admin token given as values: the chart makes the two Secrets.
func TestRenderInlineSecrets(t *testing.T) {
	c := loadChart(t)
	set := map[string]any{
		"tls": map[string]any{
			"caCert":  "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
			"caKey":   "-----BEGIN PRIVATE KEY-----\nca\n-----END PRIVATE KEY-----\n",
			"apiCert": "-----BEGIN CERTIFICATE-----\napi\n-----END CERTIFICATE-----\n",
			"apiKey":  "-----BEGIN PRIVATE KEY-----\napi\n-----END PRIVATE KEY-----\n",
		},
		"admin": map[string]any{"token": "st_admin-token\n"},
	}
	out, vals, err := renderChart(t, c, "hq", nil, set)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	r := decodeAll(t, out)
	r.values = vals
	checkRelease(t, r)
	tlsSec := r.secrets["hq-strata-tls"]
	if tlsSec == nil {
		t.Fatalf("no Secret hq-strata-tls among %v", keys(r.secrets))
	}
	for _, k := range []string{"ca.crt", "ca.key", "api.crt", "api.key"} {
		if !strings.Contains(string(tlsSec.Data[k]), "-----BEGIN") {
			t.Errorf("tls Secret %s: %q", k, tlsSec.Data[k])
		}
	}
	if got := string(r.secrets["hq-strata-admin"].Data["admin.token"]); got != "st_admin-token" {
		t.Errorf("admin token %q", got)
	}
}

// TestRenderRefusesMissingIdentity: without the CA, API certificate or
// admin token (given or an existing Secret) the chart does not render.
func TestRenderRefusesMissingIdentity(t *testing.T) {
	c := loadChart(t)
	_, _, err := renderChart(t, c, "hq", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "tls.existingSecret") {
		t.Fatalf("render without TLS: %v", err)
	}
	_, _, err = renderChart(t, c, "hq", nil, map[string]any{"tls": map[string]any{"existingSecret": "x"}})
	if err == nil || !strings.Contains(err.Error(), "admin.existingSecret") {
		t.Fatalf("render without admin token: %v", err)
	}
}

// TestBootstrapOff: after the first install, replica 0 joins the others
// like any replica, so that one that lost its volume cannot found a
// second cluster.
func TestBootstrapOff(t *testing.T) {
	c := loadChart(t)
	out, vals, err := renderChart(t, c, "hq", []string{"values-hq.yaml"}, map[string]any{
		"cluster": map[string]any{"bootstrap": false},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := decodeAll(t, out)
	r.values = vals
	for i, cfg := range checkRelease(t, r) {
		if cfg.Cluster.Bootstrap {
			t.Errorf("replica %d bootstraps", i)
		}
		if len(cfg.Cluster.Join) != 2 {
			t.Errorf("replica %d joins through %v, want the two others", i, cfg.Cluster.Join)
		}
	}
}

// TestStrictDecoderRefusesUnknownFields keeps the decoder honest: a
// misspelt field is an error, not dropped.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}], clusterIp: None}\n",
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec: {replicas: 3, replicas: 2}\n",
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: a}\nspec: {maxUnavailable: 1, maxunavailable: 1}\n",
	} {
		if _, _, err := decoder.Decode([]byte(doc), nil, nil); err == nil || !runtime.IsStrictDecodingError(err) {
			t.Errorf("decoded %q: %v", doc, err)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// nested reads a value at a path of a values tree.
func nested(v map[string]any, path ...string) any {
	var cur any = v
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func mustInt(t *testing.T, v any, what string) int32 {
	t.Helper()
	switch n := v.(type) {
	case int:
		return int32(n)
	case int64:
		return int32(n)
	case float64:
		return int32(n)
	}
	t.Fatalf("%s: %T %v is not a number", what, v, v)
	return 0
}

func boolOf(v any) bool { b, _ := v.(bool); return b }

func TestMain(m *testing.M) {
	if _, err := os.Stat(filepath.Join(chartDir, "Chart.yaml")); err != nil {
		fmt.Fprintln(os.Stderr, "run from deploy/helm:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// TestRenderPostgres: a tier on PostgreSQL — the store section through
// config, the password from a Secret through extraEnv, egress to the
// database through extraEgress — renders and validates.
func TestRenderPostgres(t *testing.T) {
	c := loadChart(t)
	out, vals, err := renderChart(t, c, "hq", []string{"values-hq.yaml"}, map[string]any{
		"config": map[string]any{"store": map[string]any{
			"kind": "postgres", "dsn": "postgres://strata@pg.example:5432/strata?sslmode=verify-full"}},
		"extraEnv": []any{map[string]any{"name": "PGPASSWORD",
			"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "hq-pg", "key": "password"}}}},
		"networkPolicy": map[string]any{"extraEgress": []any{map[string]any{
			"ports": []any{map[string]any{"port": 5432, "protocol": "TCP"}},
			"to":    []any{map[string]any{"ipBlock": map[string]any{"cidr": "10.0.0.0/24"}}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := decodeAll(t, out)
	r.values = vals
	for i, cfg := range checkRelease(t, r) {
		if cfg.Store.Kind != "postgres" {
			t.Errorf("replica %d: store %q", i, cfg.Store.Kind)
		}
	}
	env := r.sts.Spec.Template.Spec.Containers[0].Env
	if e := env[len(env)-1]; e.Name != "PGPASSWORD" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "hq-pg" {
		t.Errorf("env %+v", env)
	}
	eg := r.netpols[0].Spec.Egress
	if last := eg[len(eg)-1]; len(last.Ports) != 1 || last.Ports[0].Port.IntValue() != 5432 {
		t.Errorf("egress %+v", eg)
	}
}

// TestLint runs `helm lint`'s rules (Chart.yaml, values, templates as
// YAML, deprecated APIs) with each role's values: nothing above INFO.
func TestLint(t *testing.T) {
	for _, f := range roleFiles {
		vals, err := common.ReadValuesFile(filepath.Join(chartDir, f))
		if err != nil {
			t.Fatal(err)
		}
		res := lint.RunAll(chartDir, vals.AsMap(), namespace)
		for _, m := range res.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("%s: %s", f, m)
			}
		}
	}
}

// TestValuesSchema: values.schema.json refuses a misspelt or mistyped
// value at install, as strata.yaml refuses an unknown key at start.
func TestValuesSchema(t *testing.T) {
	c := loadChart(t)
	base := map[string]any{"tls": map[string]any{"existingSecret": "x"}, "admin": map[string]any{"existingSecret": "y"}}
	if _, _, err := renderChart(t, c, "hq", nil, base); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for what, set := range map[string]map[string]any{
		"unknown key":   {"replica": 3},
		"nested typo":   {"mqtt": map[string]any{"enable": true}},
		"port type":     {"api": map[string]any{"port": "8443"}},
		"role":          {"node": map[string]any{"role": "edge"}},
		"node name":     {"node": map[string]any{"name": "HQ_1"}},
		"upstream typo": {"federation": map[string]any{"upstreams": []any{map[string]any{"adress": "hq:7443"}}}},
	} {
		if _, _, err := renderChart(t, c, "hq", nil, util.MergeTables(set, base)); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: %v", what, err)
		}
	}
}
