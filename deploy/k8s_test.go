package deploy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore/apikey"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	kustomize "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/yaml"
)

// optionalManifests stay out of kustomization.yaml and are applied on their
// own: they need CRDs or a controller the default install does not assume.
var optionalManifests = []string{"monitoring.yaml", "ingress-nginx.yaml"}

// decoder decodes the kinds of k8s.io/api the manifests use, strictly: an
// unknown or duplicate field, or a number where a string belongs, fails.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// manifests are the objects "kubectl apply -k deploy/k8s" applies, as
// kustomize builds them, and those of the optional manifests.
type manifests struct {
	namespace  string
	workloads  []*workload
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	netpols    []*networkingv1.NetworkPolicy
	ingresses  []*networkingv1.Ingress
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
	problems
}

// workload is a Deployment or StatefulSet and its keygate containers.
type workload struct {
	name     string // "Deployment keygate"
	replicas int32
	pod      *corev1.PodTemplateSpec
	keygate  map[*corev1.Container]*invocation
}

func kustomization(t *testing.T) *kustomize.Kustomization {
	t.Helper()
	var k kustomize.Kustomization
	if err := yaml.UnmarshalStrict([]byte(readFile(t, "k8s/kustomization.yaml")), &k); err != nil {
		t.Fatalf("k8s/kustomization.yaml: %v", err)
	}
	return &k
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	dir := filepath.Join(repoRoot, "deploy", "k8s")
	k := kustomization(t)
	m := &manifests{namespace: k.Namespace, configMaps: map[string]map[string]string{}, secrets: map[string]map[string]string{}}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(k.Resources, name) && !slices.Contains(optionalManifests, name) {
			m.add("k8s/%s is not in kustomization.yaml (only %v may stay out)", name, optionalManifests)
		}
	}
	built, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	for _, r := range built.Resources() {
		m.decode("kustomize build: "+r.CurId().String(), []byte(r.MustYaml()))
	}
	for _, name := range optionalManifests {
		nodes, err := kio.FromBytes([]byte(readFile(t, "k8s/"+name)))
		if err != nil {
			t.Fatalf("k8s/%s: %v", name, err)
		}
		for _, n := range nodes {
			m.decode("k8s/"+name+": "+n.GetKind()+" "+n.GetName(), []byte(n.MustString()))
		}
	}
	for _, w := range m.workloads {
		m.findKeygate(w, mustDockerfile(t), keygateRepo(t))
	}
	return m
}

// decode decodes one object into its type and files it.
func (m *manifests) decode(where string, b []byte) {
	var tm metav1.TypeMeta
	if yaml.Unmarshal(b, &tm) == nil && tm.APIVersion == "monitoring.coreos.com/v1" {
		return // the Prometheus Operator's types would bring controller-runtime along
	}
	obj, _, err := decoder.Decode(b, nil, nil)
	if err != nil {
		m.add("%s: %v", where, err)
		return
	}
	if o := obj.(metav1.Object); tm.Kind == "Namespace" && o.GetName() != m.namespace || tm.Kind != "Namespace" && o.GetNamespace() != m.namespace {
		m.add("%s: namespace %q (name %q), want %q", where, o.GetNamespace(), o.GetName(), m.namespace)
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		m.workloads = append(m.workloads, &workload{"Deployment " + o.Name, ptr.Deref(o.Spec.Replicas, 1), &o.Spec.Template, nil})
	case *appsv1.StatefulSet:
		m.workloads = append(m.workloads, &workload{"StatefulSet " + o.Name, ptr.Deref(o.Spec.Replicas, 1), &o.Spec.Template, nil})
	case *corev1.Service:
		m.services = append(m.services, o)
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	case *networkingv1.NetworkPolicy:
		m.netpols = append(m.netpols, o)
	case *networkingv1.Ingress:
		m.ingresses = append(m.ingresses, o)
	case *corev1.ConfigMap:
		m.configMaps[o.Name] = o.Data
	case *corev1.Secret:
		m.secrets[o.Name] = map[string]string{}
		maps.Copy(m.secrets[o.Name], o.StringData)
		for k, v := range o.Data {
			m.secrets[o.Name][k] = string(v)
		}
	}
}

// findKeygate builds the invocation of every container of w that runs the
// keygate image: the image's ENTRYPOINT and CMD as Kubernetes' command and
// args replace them, and the environment with Secrets and ConfigMaps
// resolved (envFrom, then env).
func (m *manifests) findKeygate(w *workload, df *dockerfile, repo string) {
	w.keygate = map[*corev1.Container]*invocation{}
	for i := range w.pod.Spec.Containers {
		c := &w.pod.Spec.Containers[i]
		if imageRepo(c.Image) != repo {
			continue
		}
		where := fmt.Sprintf("%s container %s", w.name, c.Name)
		argv, args := c.Command, c.Args // Kubernetes' command replaces ENTRYPOINT and CMD
		if len(argv) == 0 && len(args) == 0 {
			argv, args = df.entrypoint, df.cmd
		} else if len(argv) == 0 {
			argv = df.entrypoint
		}
		if argv = slices.Concat(argv, args); len(argv) < 2 || argv[0] != df.binaryPath() {
			m.add("%s: runs %q, not the image's %s SUBCOMMAND", where, argv, df.binaryPath())
			continue
		}
		inv := &invocation{where: where, cmd: argv[1], args: argv[2:], env: map[string]string{}}
		for _, ef := range c.EnvFrom {
			src, ok := m.configMaps[ptr.Deref(ef.ConfigMapRef, corev1.ConfigMapEnvSource{}).Name]
			if ef.SecretRef != nil {
				src, ok = m.secrets[ef.SecretRef.Name]
			}
			if !ok {
				m.add("%s: envFrom %+v: no such ConfigMap or Secret", where, ef)
			}
			for k, v := range src {
				inv.env[ef.Prefix+k] = v
			}
		}
		for _, e := range c.Env {
			v, err := m.envValue(w, c, e)
			if err != nil {
				m.add("%s: env %s: %v", where, e.Name, err)
			}
			inv.env[e.Name] = v
		}
		w.keygate[c] = inv
	}
}

func (m *manifests) envValue(w *workload, c *corev1.Container, e corev1.EnvVar) (string, error) {
	var v string
	var ok bool
	switch vf := e.ValueFrom; {
	case vf == nil:
		return e.Value, nil
	case vf.SecretKeyRef != nil:
		v, ok = m.secrets[vf.SecretKeyRef.Name][vf.SecretKeyRef.Key]
	case vf.ConfigMapKeyRef != nil:
		v, ok = m.configMaps[vf.ConfigMapKeyRef.Name][vf.ConfigMapKeyRef.Key]
	case vf.ResourceFieldRef != nil && vf.ResourceFieldRef.Resource == "limits.memory":
		if i := slices.IndexFunc(w.pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == vf.ResourceFieldRef.ContainerName }); i >= 0 {
			c = &w.pod.Spec.Containers[i]
		}
		q := c.Resources.Limits.Memory()
		v, ok = strconv.FormatInt(q.Value(), 10), !q.IsZero()
	}
	if !ok {
		return "", fmt.Errorf("%+v: no such key, or not a source this test can resolve", e.ValueFrom)
	}
	return v, nil
}

// selects reports whether a label selector matches a set of labels; an
// empty or invalid selector matches nothing here.
func selects(sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(set))
}

func (m *manifests) selected(sel *metav1.LabelSelector) []*workload {
	return slices.DeleteFunc(slices.Clone(m.workloads), func(w *workload) bool { return !selects(sel, w.pod.Labels) })
}

// containerPort resolves a port of the pod, a number or a name, to a
// container port; 0 when no container declares it.
func containerPort(pod *corev1.PodSpec, p intstr.IntOrString) int {
	for _, c := range pod.Containers {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal && p.StrVal != "" || cp.ContainerPort == p.IntVal && p.Type == intstr.Int {
				return int(cp.ContainerPort)
			}
		}
	}
	return 0
}

// keygateAt is the keygate process of w that serves port on its --listen
// (health false) or on the listener of /metrics and the probes (health
// true); nil when none does.
func (w *workload) keygateAt(port int, health bool) *invocation {
	for _, inv := range w.keygate {
		flag := "listen"
		if health {
			flag = inv.healthFlag()
		}
		if commands[inv.cmd] != nil && inv.port(flag) == port {
			return inv
		}
	}
	return nil
}

// servicePort resolves a port of the Service named name, by number or by
// port name, to the workloads behind it and their container port.
func (m *manifests) servicePort(name string, port intstr.IntOrString) (map[*workload]int, error) {
	for _, s := range m.services {
		for _, sp := range s.Spec.Ports {
			if s.Name != name || !(sp.Name == port.StrVal && port.StrVal != "" || sp.Port == port.IntVal) {
				continue
			}
			target := cmp.Or(sp.TargetPort, intstr.FromInt32(sp.Port)) // unset: the port itself
			out := map[*workload]int{}
			for _, w := range m.selected(&metav1.LabelSelector{MatchLabels: s.Spec.Selector}) {
				if out[w] = containerPort(&w.pod.Spec, target); out[w] == 0 {
					return nil, fmt.Errorf("Service %s: targetPort %s is no container port of %s", s.Name, target.String(), w.name)
				}
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("Service %s selects no pod", s.Name)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("no Service %q with port %s", name, port.String())
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	var serve, sidecars []*workload
	var all []*invocation
	for _, w := range m.workloads {
		m.podProblems(w)
		for c, inv := range w.keygate {
			m.problems = append(m.problems, inv.problems()...)
			m.keygateProblems(w, c, inv)
			all = append(all, inv)
			if inv.cmd == "serve" {
				serve = append(serve, w)
			} else {
				sidecars = append(sidecars, w)
			}
		}
	}
	if len(serve) != 1 || len(sidecars) == 0 {
		m.add("want one workload running keygate serve and at least one running the sidecar, found %d and %d", len(serve), len(sidecars))
	}
	m.problems = append(m.problems, shared(all)...)

	// Services reach keygate containers on their --listen port: the
	// sidecar's, never the app's behind it.
	for _, s := range m.services {
		for _, sp := range s.Spec.Ports {
			targets, err := m.servicePort(s.Name, intstr.FromInt32(sp.Port))
			if err != nil {
				m.add("%v", err)
			}
			for w, port := range targets {
				if len(w.keygate) > 0 && w.keygateAt(port, false) == nil {
					m.add("Service %s port %d reaches %s port %d, which is no keygate --listen: clients would bypass the key check", s.Name, sp.Port, w.name, port)
				}
			}
		}
	}
	// A PodDisruptionBudget keeps serve up and lets a node drain.
	for _, w := range serve {
		i := slices.IndexFunc(m.pdbs, func(pdb *policyv1.PodDisruptionBudget) bool { return selects(pdb.Spec.Selector, w.pod.Labels) })
		if i < 0 {
			m.add("%s: no PodDisruptionBudget", w.name)
		} else if ma := m.pdbs[i].Spec.MinAvailable; ma == nil || ma.IntValue() >= int(w.replicas) {
			m.add("PodDisruptionBudget %s: minAvailable %v with %d replicas blocks every node drain", m.pdbs[i].Name, ma, w.replicas)
		}
	}
	// NetworkPolicies select pods and name ports those pods have. (What
	// they admit takes an enforcing CNI to tell.)
	for _, np := range m.netpols {
		sel := m.selected(&np.Spec.PodSelector)
		if len(sel) == 0 {
			m.add("NetworkPolicy %s selects no workload", np.Name)
		}
		for _, rule := range np.Spec.Ingress {
			for _, rp := range rule.Ports {
				for _, w := range sel {
					if rp.Port != nil && containerPort(&w.pod.Spec, *rp.Port) == 0 {
						m.add("NetworkPolicy %s: port %s is no container port of %s", np.Name, rp.Port.String(), w.name)
					}
				}
			}
		}
	}
	m.forwardAuths()
	report(t, m.problems)
}

// podProblems checks what every pod of the manifests must have: a locked
// down security context and resources.
func (m *manifests) podProblems(w *workload) {
	pod := ptr.Deref(w.pod.Spec.SecurityContext, corev1.PodSecurityContext{})
	for _, c := range w.pod.Spec.Containers {
		sc := ptr.Deref(c.SecurityContext, corev1.SecurityContext{})
		caps := ptr.Deref(sc.Capabilities, corev1.Capabilities{})
		for problem, bad := range map[string]bool{
			"runAsNonRoot is not true":                    !ptr.Deref(cmp.Or(sc.RunAsNonRoot, pod.RunAsNonRoot), false),
			"runs as uid 0":                               ptr.Deref(cmp.Or(sc.RunAsUser, pod.RunAsUser), -1) == 0,
			"readOnlyRootFilesystem is not true":          !ptr.Deref(sc.ReadOnlyRootFilesystem, false),
			"allowPrivilegeEscalation is not false":       ptr.Deref(sc.AllowPrivilegeEscalation, true) || ptr.Deref(sc.Privileged, false),
			"capabilities: want drop [ALL] and no add":    !slices.Contains(caps.Drop, "ALL") || len(caps.Add) > 0,
			"want cpu and memory requests, memory limits": c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero(),
		} {
			if bad {
				m.add("%s container %s: %s", w.name, c.Name, problem)
			}
		}
	}
}

// keygateProblems checks one keygate container against the binary: ports,
// probes, scrape annotations, and what Kubernetes adds to its environment.
func (m *manifests) keygateProblems(w *workload, c *corev1.Container, inv *invocation) {
	add := func(format string, args ...any) { m.add(inv.where+": "+format, args...) }
	if commands[inv.cmd] == nil {
		return // inv.problems says why
	}
	health := inv.healthFlag()
	if host, port, _ := splitHostPort(inv.value(health)); isLoopback(host) {
		add("--%s %q: the kubelet's probes and Prometheus cannot reach a loopback address; set %s=:%d", health, inv.value(health), envFor(health), port)
	}
	// TestKubernetesRuns asks the probes and the scrape port.
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		add("want an httpGet liveness and readiness probe")
	}
	if ann := w.pod.Annotations; ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] == "" {
		add("no prometheus.io/scrape and prometheus.io/port annotations")
	}
	// The kubelet would set KEYGATE_SERVICE_HOST, KEYGATE_PORT… from the
	// Service named keygate, in the variables keygate reads.
	if ptr.Deref(w.pod.Spec.EnableServiceLinks, true) {
		add("set enableServiceLinks: false, or the kubelet sets KEYGATE_* variables of its own")
	}
	if g := ptr.Deref(w.pod.Spec.TerminationGracePeriodSeconds, 30); g <= drainSeconds {
		add("terminationGracePeriodSeconds %d does not cover keygate's %d s drain", g, drainSeconds)
	}
	for _, name := range []string{"KEYGATE_ADMIN_TOKENS", "KEYGATE_HASH_KEY"} {
		if v, ok := inv.env[name]; ok && !strings.Contains(v, "CHANGE-ME") {
			add("%s is %q: the committed value must be a CHANGE-ME placeholder", name, v)
		}
	}
}

// forwardAuth is an Ingress's auth-url and the headers it forwards.
type forwardAuth struct {
	ingress string
	url     *url.URL
	headers []string
}

// forwardAuths checks that each Ingress's auth-url reaches keygate serve's
// listener through its Service, in the manifests' namespace.
func (m *manifests) forwardAuths() []forwardAuth {
	var out []forwardAuth
	for _, ing := range m.ingresses {
		raw := ing.Annotations["nginx.ingress.kubernetes.io/auth-url"]
		u, err := url.Parse(raw)
		if raw == "" {
			continue
		} else if err != nil || u.Scheme != "http" || u.Path != "/forward-auth" && !strings.HasPrefix(u.Path, "/forward-auth/") {
			m.add("Ingress %s: auth-url %q is not http://…/forward-auth", ing.Name, raw)
			continue
		}
		// name.namespace.svc.cluster.local: the Service, in the namespace.
		name, ns, _ := strings.Cut(u.Hostname()+"."+m.namespace, ".")
		targets, err := m.servicePort(name, intstr.Parse(cmp.Or(u.Port(), "80")))
		if ns, _, _ = strings.Cut(ns, "."); ns != m.namespace {
			err = fmt.Errorf("host %q is not in namespace %s", u.Hostname(), m.namespace)
		}
		if err != nil {
			m.add("Ingress %s: auth-url: %v", ing.Name, err)
		}
		for w, p := range targets {
			if inv := w.keygateAt(p, false); inv == nil || inv.cmd != "serve" {
				m.add("Ingress %s: auth-url reaches %s port %d, not keygate serve", ing.Name, w.name, p)
			}
		}
		fa := forwardAuth{ingress: ing.Name, url: u}
		for _, h := range strings.Split(ing.Annotations["nginx.ingress.kubernetes.io/auth-response-headers"], ",") {
			if h = strings.TrimSpace(h); h != "" {
				fa.headers = append(fa.headers, http.CanonicalHeaderKey(h))
			}
		}
		out = append(out, fa)
	}
	return out
}

// TestKubernetesRuns runs every keygate container as the manifests
// configure it: probes and scrape annotations answer as they must, serve
// and the sidecar agree (the README session), the sidecar's public paths
// and route scopes work, and the Ingress auth-url returns the headers the
// Ingress forwards.
func TestKubernetesRuns(t *testing.T) {
	m := loadManifests(t)
	byCmd := map[string]*invocation{}
	for _, w := range m.workloads {
		for c, inv := range w.keygate {
			if commands[inv.cmd] == nil {
				t.Fatalf("%s: not serve or sidecar (see TestKubernetesManifests)", inv.where)
			}
			scrape, _ := strconv.Atoi(w.pod.Annotations["prometheus.io/port"])
			probes := []probe{{inv.where + " prometheus.io annotations", "metrics", cmp.Or(w.pod.Annotations["prometheus.io/path"], "/metrics"), scrape}}
			for kind, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if pr != nil && pr.HTTPGet != nil {
					probes = append(probes, probe{inv.where, kind, pr.HTTPGet.Path, containerPort(&w.pod.Spec, pr.HTTPGet.Port)})
				}
			}
			checkProbes(t, inv, probes)
			byCmd[inv.cmd] = inv
		}
	}
	if byCmd["serve"] == nil || byCmd["sidecar"] == nil {
		t.Fatal("the manifests need a keygate serve and a keygate sidecar")
	}
	serve, sidecar := session(t, byCmd["serve"], byCmd["sidecar"])
	admin := adminClient(t, serve)

	// The sidecar's --require-scopes, as configured.
	for _, rule := range strings.Split(sidecar.inv.value("require-scopes"), ";") {
		route, scopes, ok := strings.Cut(rule, "=")
		f := append([]string{"GET"}, strings.Fields(route)...) // [METHOD ]prefix
		if !ok || len(f) < 2 {
			continue
		}
		for want, key := range map[int]*apikey.APIKey{
			http.StatusForbidden: createKey(t, admin, apikey.CreateParams{Name: "no scopes", Subject: "user_1"}),
			http.StatusOK:        createKey(t, admin, apikey.CreateParams{Name: "scoped", Subject: "user_1", Scopes: strings.Split(scopes, ",")}),
		} {
			if status, _, _ := testkit.Do(t, nil, f[len(f)-2], "http://"+sidecar.listen+f[len(f)-1], testkit.Bearer(key.Secret), nil); status != want {
				t.Errorf("%s: %s (needs %s) with key %s: %d, want %d", sidecar.inv.where, route, scopes, key.ID, status, want)
			}
		}
	}

	// ingress-nginx: the auth-url answers 200 with exactly the identity
	// headers the Ingress forwards, 401 without a key, 403 without the scope.
	for _, fa := range m.forwardAuths() {
		scopes := slices.DeleteFunc(strings.Split(fa.url.Query().Get("scopes"), ","), func(s string) bool { return s == "" })
		authURL := "http://" + serve.listen + fa.url.RequestURI()
		key := createKey(t, admin, apikey.CreateParams{Name: "ingress", Subject: "user_7", Claims: json.RawMessage(`{"plan":"pro"}`), Scopes: scopes})
		status, h, body := testkit.Do(t, nil, "GET", authURL, testkit.Bearer(key.Secret), nil)
		var identity []string
		for name := range h {
			if strings.HasPrefix(name, "X-Api-Key-") {
				identity = append(identity, name)
			}
		}
		if slices.Sort(identity); status != http.StatusOK || !slices.Equal(identity, slices.Sorted(slices.Values(fa.headers))) {
			t.Errorf("Ingress %s: auth-url with a valid key: %d %s with %v; want 200 with the auth-response-headers %v", fa.ingress, status, body, identity, fa.headers)
		}
		if status, _, _ := testkit.Do(t, nil, "GET", authURL, nil, nil); status != http.StatusUnauthorized {
			t.Errorf("Ingress %s: auth-url without a key: %d, want 401", fa.ingress, status)
		}
		bare := createKey(t, admin, apikey.CreateParams{Name: "ingress bare", Subject: "user_7"})
		if status, _, _ := testkit.Do(t, nil, "GET", authURL, testkit.Bearer(bare.Secret), nil); len(scopes) > 0 && status != http.StatusForbidden {
			t.Errorf("Ingress %s: auth-url with a key lacking %v: %d, want 403", fa.ingress, scopes, status)
		}
	}
	sidecar.stop(t)
	serve.stop(t)
}
