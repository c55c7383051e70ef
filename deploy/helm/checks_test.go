package helm

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/strata-dm/strata/node/config"
)

// checkRelease checks the essentials of one rendering and returns each
// replica's strata.yaml, decoded and validated by the node's own config
// package (as `strata serve` does at start).
func checkRelease(t *testing.T, r *rendered) []config.Config {
	t.Helper()
	v := r.values
	replicas := mustInt(t, nested(v, "replicas"), "replicas")
	apiPort := mustInt(t, nested(v, "api", "port"), "api.port")
	mqttOn := boolOf(nested(v, "mqtt", "enabled"))
	mqttPort := mustInt(t, nested(v, "mqtt", "port"), "mqtt.port")
	fedOn := boolOf(nested(v, "federation", "enabled"))
	fedPort := mustInt(t, nested(v, "federation", "port"), "federation.port")
	raftPort := mustInt(t, nested(v, "cluster", "port"), "cluster.port")

	sts := r.sts
	if replicas != 3 || sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("replicas: values %d, StatefulSet %v; want 3", replicas, sts.Spec.Replicas)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: an ordered start deadlocks a restart of the whole tier", sts.Spec.PodManagementPolicy)
	}
	pod := sts.Spec.Template
	sel, err := metaSelector(sts.Spec.Selector.MatchLabels)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Fatalf("StatefulSet selector %v does not match its pods' labels %v", sts.Spec.Selector.MatchLabels, pod.Labels)
	}
	checkLabels(t, "pod template", pod.Labels)

	// One volume per replica for its folder and data_dir.
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates: %d, want 1", len(sts.Spec.VolumeClaimTemplates))
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.IsZero() {
		t.Errorf("volume claim %s requests no storage", pvc.Name)
	}

	// The headless service: stable names, published before readiness.
	peers := r.services[sts.Spec.ServiceName]
	if peers == nil {
		t.Fatalf("serviceName %q is not rendered (services %v)", sts.Spec.ServiceName, keys(r.services))
	}
	if peers.Spec.ClusterIP != corev1.ClusterIPNone || !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("peers service %s: clusterIP %q, publishNotReadyAddresses %v", peers.Name, peers.Spec.ClusterIP, peers.Spec.PublishNotReadyAddresses)
	}

	// The container: ports, probes, security.
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	ctr := pod.Spec.Containers[0]
	if !strings.HasPrefix(ctr.Image, "strata:") {
		t.Errorf("image %q, want the strata image", ctr.Image)
	}
	if !slices.Equal(ctr.Args[:1], []string{"serve"}) || !slices.Contains(ctr.Args, "/var/lib/strata/strata.yaml") {
		t.Errorf("args %v", ctr.Args)
	}
	ports := map[string]corev1.ContainerPort{}
	for _, p := range ctr.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("container port name %q: %v", p.Name, errs)
		}
		ports[p.Name] = p
	}
	wantPort := func(name string, port int32, proto corev1.Protocol) {
		t.Helper()
		p, ok := ports[name]
		if !ok || p.ContainerPort != port || p.Protocol != proto {
			t.Errorf("container port %s: %+v, want %d/%s", name, p, port, proto)
		}
	}
	wantPort("https", apiPort, corev1.ProtocolTCP)
	wantPort("raft", raftPort, corev1.ProtocolTCP)
	if mqttOn {
		wantPort("mqtts", mqttPort, corev1.ProtocolTCP)
	} else if _, ok := ports["mqtts"]; ok {
		t.Error("mqtt disabled, port mqtts exposed")
	}
	if fedOn {
		wantPort("federation", fedPort, corev1.ProtocolUDP)
	} else if _, ok := ports["federation"]; ok {
		t.Error("federation disabled, its port exposed")
	}
	probe := func(what string, p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: %+v, want an HTTPS GET", what, p)
			return
		}
		g := p.HTTPGet
		if g.Path != path || g.Scheme != corev1.URISchemeHTTPS || resolvePort(g.Port, ports) != apiPort {
			t.Errorf("%s probe: GET %s %s port %s, want %s over HTTPS on %d", what, g.Scheme, g.Path, g.Port.String(), path, apiPort)
		}
	}
	probe("readiness", ctr.ReadinessProbe, "/readyz")
	probe("liveness", ctr.LivenessProbe, "/healthz")
	probe("startup", ctr.StartupProbe, "/healthz")

	psc, sc := pod.Spec.SecurityContext, ctr.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("no securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.FSGroup == nil {
		t.Errorf("pod securityContext %+v: want non-root user 65532 and an fsGroup", psc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want non-root, read-only root, no escalation, no capabilities", sc)
	}
	if ctr.Resources.Requests.Cpu().IsZero() || ctr.Resources.Requests.Memory().IsZero() || ctr.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", ctr.Resources)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the pods mount a service account token they do not use")
	}

	// Volumes: every mount names a volume; the ConfigMap has each pod's
	// strata.yaml; the Secrets are rendered or named by the values.
	vols := map[string]corev1.Volume{}
	for _, vol := range pod.Spec.Volumes {
		vols[vol.Name] = vol
	}
	mountedAt := map[string]corev1.VolumeMount{}
	for _, m := range ctr.VolumeMounts {
		if _, ok := vols[m.Name]; !ok && m.Name != pvc.Name {
			t.Errorf("mount %s of undeclared volume %s", m.MountPath, m.Name)
		}
		mountedAt[m.MountPath] = m
	}
	if m := mountedAt["/var/lib/strata"]; m.Name != pvc.Name {
		t.Errorf("/var/lib/strata is %q, want the claim %q", m.Name, pvc.Name)
	}
	cfgMount := mountedAt["/var/lib/strata/strata.yaml"]
	if cfgMount.SubPathExpr != "$(POD_NAME).yaml" || !envFromField(ctr, "POD_NAME", "metadata.name") {
		t.Errorf("strata.yaml mount %+v: want each pod's own file", cfgMount)
	}
	cmVol := vols[cfgMount.Name]
	if cmVol.ConfigMap == nil || r.cms[cmVol.ConfigMap.Name] == nil {
		t.Fatalf("config volume %+v: no such ConfigMap rendered", cmVol)
	}
	cm := r.cms[cmVol.ConfigMap.Name]
	for _, f := range []string{"admin.token", "tls/ca.crt", "tls/ca.key", "tls/api.crt", "tls/api.key"} {
		m, ok := mountedAt["/var/lib/strata/"+f]
		if !ok || !m.ReadOnly {
			t.Errorf("%s not mounted read-only in the replica's folder", f)
			continue
		}
		sec := vols[m.Name].Secret
		if sec == nil || m.SubPath != strings.TrimPrefix(f, "tls/") {
			t.Errorf("%s: volume %s subPath %q, want a Secret's key", f, m.Name, m.SubPath)
			continue
		}
		existing := nested(v, "tls", "existingSecret")
		if f == "admin.token" {
			existing = nested(v, "admin", "existingSecret")
		}
		if s := r.secrets[sec.SecretName]; s == nil && sec.SecretName != existing {
			t.Errorf("%s: Secret %q is neither rendered nor the existing one (%v)", f, sec.SecretName, existing)
		} else if s != nil {
			if _, ok := s.Data[m.SubPath]; !ok {
				t.Errorf("%s: Secret %s has no key %s", f, s.Name, m.SubPath)
			}
		}
	}

	// Each replica's strata.yaml: valid for the node, its own cluster id,
	// a stable advertised name, listeners on the container's ports, one
	// replica bootstrapping at most and the others joining.
	var cfgs []config.Config
	bootstraps := 0
	for i := range int(replicas) {
		podName := fmt.Sprintf("%s-%d", sts.Name, i)
		body, ok := cm.Data[podName+".yaml"]
		if !ok {
			t.Fatalf("ConfigMap %s has no %s.yaml (keys %v)", cm.Name, podName, keys(cm.Data))
		}
		cfg, err := config.Parse([]byte(body))
		if err != nil {
			t.Fatalf("%s.yaml: %v\n%s", podName, err, body)
		}
		cfg.Dir = "/var/lib/strata"
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s.yaml: %v\n%s", podName, err, body)
		}
		if cfg.Name != nested(v, "node", "name") || cfg.Role != nested(v, "node", "role") {
			t.Errorf("%s: name %q role %q", podName, cfg.Name, cfg.Role)
		}
		cl := cfg.Cluster
		if cl.ID != podName {
			t.Errorf("%s: cluster.id %q", podName, cl.ID)
		}
		wantAdv := fmt.Sprintf("%s.%s.%s.svc.cluster.local:%d", podName, peers.Name, namespace, raftPort)
		if cl.Advertise != wantAdv || portOf(t, cl.Addr) != raftPort {
			t.Errorf("%s: cluster addr %q advertise %q, want :%d and %q", podName, cl.Addr, cl.Advertise, raftPort, wantAdv)
		}
		if cfg.Path(cfg.DataDir) != "/var/lib/strata/data" || cfg.Path(cl.TLSCert) != "/var/lib/strata/replica.crt" {
			t.Errorf("%s: data_dir %s, replica certificate %s: want both on the volume", podName, cfg.Path(cfg.DataDir), cfg.Path(cl.TLSCert))
		}
		if cl.Bootstrap {
			bootstraps++
			if i != 0 {
				t.Errorf("replica %d bootstraps", i)
			}
		} else {
			if len(cl.Join) == 0 {
				t.Errorf("%s neither bootstraps nor joins", podName)
			}
			for _, a := range cl.Join {
				if a == cl.Advertise || !strings.HasSuffix(a, fmt.Sprintf(".%s.%s.svc.cluster.local:%d", peers.Name, namespace, raftPort)) {
					t.Errorf("%s joins through %q", podName, a)
				}
			}
			// While the cluster is being made, only through the replica
			// that makes it: another replica not in it yet knows no
			// leader, and a join asking it would wait on it for good.
			first := fmt.Sprintf("%s-0.%s.%s.svc.cluster.local:%d", sts.Name, peers.Name, namespace, raftPort)
			if boolOf(nested(v, "cluster", "bootstrap")) && !slices.Equal(cl.Join, []string{first}) {
				t.Errorf("%s joins a cluster being made through %v, want %s only", podName, cl.Join, first)
			}
		}
		if portOf(t, cfg.API.Addr) != apiPort {
			t.Errorf("%s: api.addr %q, container port %d", podName, cfg.API.Addr, apiPort)
		}
		if mqttOn != (cfg.MQTT.Addr != "") || (mqttOn && portOf(t, cfg.MQTT.Addr) != mqttPort) {
			t.Errorf("%s: mqtt.addr %q (enabled %v, port %d)", podName, cfg.MQTT.Addr, mqttOn, mqttPort)
		}
		if fedOn != (cfg.Federation.Addr != "") || (fedOn && portOf(t, cfg.Federation.Addr) != fedPort) {
			t.Errorf("%s: federation.addr %q (enabled %v, port %d)", podName, cfg.Federation.Addr, fedOn, fedPort)
		}
		cfgs = append(cfgs, cfg)
	}
	if b := boolOf(nested(v, "cluster", "bootstrap")); (bootstraps == 1) != b || bootstraps > 1 {
		t.Errorf("%d replicas bootstrap (cluster.bootstrap %v)", bootstraps, b)
	}

	// Services: selectors reach the pods, ports and protocols.
	svcPort := func(name string, port int32, proto corev1.Protocol) *corev1.Service {
		t.Helper()
		s := r.services[name]
		if s == nil {
			t.Errorf("no service %s (have %v)", name, keys(r.services))
			return nil
		}
		sel, err := metaSelector(s.Spec.Selector)
		if err != nil || len(s.Spec.Selector) == 0 {
			t.Errorf("service %s: selector %v", name, s.Spec.Selector)
			return nil
		}
		if !sel.Matches(labels.Set(withPodName(pod.Labels, s.Spec.Selector["statefulset.kubernetes.io/pod-name"]))) {
			t.Errorf("service %s selects %v, not the pods (%v)", name, s.Spec.Selector, pod.Labels)
		}
		for _, p := range s.Spec.Ports {
			if p.Port == port && p.Protocol == proto && resolvePort(p.TargetPort, ports) == port {
				if cp := ports[p.TargetPort.StrVal]; p.TargetPort.Type == intstr.String && cp.Protocol != proto {
					t.Errorf("service %s: target %s is %s", name, p.TargetPort.StrVal, cp.Protocol)
				}
				return s
			}
		}
		t.Errorf("service %s: ports %+v, want %d/%s", name, s.Spec.Ports, port, proto)
		return s
	}
	svcPort(sts.Name, apiPort, corev1.ProtocolTCP)
	svcPort(peers.Name, raftPort, corev1.ProtocolTCP)
	if mqttOn {
		svcPort(sts.Name+"-mqtt", mqttPort, corev1.ProtocolTCP)
	} else if r.services[sts.Name+"-mqtt"] != nil {
		t.Error("mqtt disabled, its service rendered")
	}
	if fedOn {
		svcPort(sts.Name+"-federation", fedPort, corev1.ProtocolUDP)
		if boolOf(nested(v, "federation", "perReplicaServices")) {
			for i := range int(replicas) {
				s := svcPort(fmt.Sprintf("%s-federation-%d", sts.Name, i), fedPort, corev1.ProtocolUDP)
				if s != nil && s.Spec.Selector["statefulset.kubernetes.io/pod-name"] != fmt.Sprintf("%s-%d", sts.Name, i) {
					t.Errorf("service %s selects %v, not its replica", s.Name, s.Spec.Selector)
				}
			}
		}
	} else if r.services[sts.Name+"-federation"] != nil {
		t.Error("federation disabled, its service rendered")
	}

	// The disruption budget: one replica at a time.
	if len(r.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets", len(r.pdbs))
	}
	pdb := r.pdbs[0]
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PDB: maxUnavailable %v minAvailable %v, want maxUnavailable 1", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	if s, err := metaSelector(pdb.Spec.Selector.MatchLabels); err != nil || !s.Matches(labels.Set(pod.Labels)) {
		t.Errorf("PDB selector %v does not select the pods", pdb.Spec.Selector)
	}

	checkNetworkPolicy(t, r, pod.Labels, apiPort, mqttOn, mqttPort, fedOn, fedPort, raftPort)
	return cfgs
}

func checkNetworkPolicy(t *testing.T, r *rendered, podLabels map[string]string, apiPort int32, mqttOn bool, mqttPort int32, fedOn bool, fedPort, raftPort int32) {
	t.Helper()
	if len(r.netpols) != 1 {
		t.Fatalf("%d NetworkPolicies", len(r.netpols))
	}
	np := r.netpols[0]
	if s, err := metaSelector(np.Spec.PodSelector.MatchLabels); err != nil || !s.Matches(labels.Set(podLabels)) {
		t.Fatalf("NetworkPolicy selects %v, not the pods", np.Spec.PodSelector)
	}
	if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
		t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
	}
	type rule struct {
		port  int32
		proto corev1.Protocol
	}
	in := map[rule]bool{}      // port open to anyone
	inPeers := map[rule]bool{} // port open to the replicas only
	for _, ing := range np.Spec.Ingress {
		for _, p := range ing.Ports {
			k := rule{p.Port.IntVal, *p.Protocol}
			if len(ing.From) == 0 {
				in[k] = true
			}
			for _, f := range ing.From {
				if f.PodSelector != nil && labels.SelectorFromSet(f.PodSelector.MatchLabels).Matches(labels.Set(podLabels)) {
					inPeers[k] = true
				}
			}
		}
	}
	if !in[rule{apiPort, corev1.ProtocolTCP}] {
		t.Errorf("API port %d not open", apiPort)
	}
	if mqttOn != in[rule{mqttPort, corev1.ProtocolTCP}] {
		t.Errorf("MQTT port %d open %v, enabled %v", mqttPort, in[rule{mqttPort, corev1.ProtocolTCP}], mqttOn)
	}
	if fedOn != in[rule{fedPort, corev1.ProtocolUDP}] {
		t.Errorf("federation port %d/UDP open %v, enabled %v", fedPort, in[rule{fedPort, corev1.ProtocolUDP}], fedOn)
	}
	if !inPeers[rule{raftPort, corev1.ProtocolTCP}] || in[rule{raftPort, corev1.ProtocolTCP}] {
		t.Errorf("replicas' channel %d: from replicas %v, from anyone %v", raftPort, inPeers[rule{raftPort, corev1.ProtocolTCP}], in[rule{raftPort, corev1.ProtocolTCP}])
	}
	out := map[rule]bool{}
	outPeers := false
	for _, eg := range np.Spec.Egress {
		for _, p := range eg.Ports {
			out[rule{p.Port.IntVal, *p.Protocol}] = true
			if p.Port.IntVal == raftPort {
				for _, to := range eg.To {
					if to.PodSelector != nil && labels.SelectorFromSet(to.PodSelector.MatchLabels).Matches(labels.Set(podLabels)) {
						outPeers = true
					}
				}
			}
		}
	}
	if !outPeers {
		t.Error("no egress to the other replicas' channel")
	}
	if !out[rule{53, corev1.ProtocolUDP}] {
		t.Error("no egress to DNS")
	}
	ups, _ := nested(r.values, "federation", "upstreams").([]any)
	upPort := mustInt(t, nested(r.values, "networkPolicy", "upstreamPort"), "networkPolicy.upstreamPort")
	if (len(ups) > 0) != out[rule{upPort, corev1.ProtocolUDP}] {
		t.Errorf("egress to upstream federation %d/UDP: %v with %d upstreams", upPort, out[rule{upPort, corev1.ProtocolUDP}], len(ups))
	}
	for _, u := range ups {
		addr, _ := u.(map[string]any)["address"].(string)
		if portOf(t, addr) != upPort {
			t.Errorf("upstream %s: networkPolicy.upstreamPort is %d", addr, upPort)
		}
	}
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	return labels.SelectorFromValidatedSet(labels.Set(m)), nil
}

// withPodName adds the label the StatefulSet controller puts on each
// pod, for the per-replica services.
func withPodName(l map[string]string, pod string) map[string]string {
	out := map[string]string{}
	if pod != "" {
		out["statefulset.kubernetes.io/pod-name"] = pod
	}
	for k, v := range l {
		out[k] = v
	}
	return out
}

func envFromField(c corev1.Container, name, field string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field {
			return true
		}
	}
	return false
}

// resolvePort turns a probe's or service's target port (number or name)
// into the container's port number.
func resolvePort(p intstr.IntOrString, ports map[string]corev1.ContainerPort) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return ports[p.StrVal].ContainerPort
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
	}
	return int32(n)
}
