package deploy

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func TestKubernetesManifests(t *testing.T) {
	cl := loadCluster(t)
	add := cl.add

	seen := map[string]*k8sObject{}
	for _, o := range cl.objects {
		id := o.Kind + "/" + o.Metadata.Name
		if prev, ok := seen[id]; ok {
			add("%s: also defined in k8s/%s", o, prev.file)
		}
		seen[id] = o
	}

	var serve, sidecars []*workload
	var allKeygate []*invocation
	for _, w := range cl.workloads {
		if !w.spec.Selector.matches(w.labels()) || w.spec.Selector.empty() {
			add("%s: selector %v does not match the pod labels %v", w.obj, w.spec.Selector.MatchLabels, w.labels())
		}
		problems := podProblems(w)
		cl.problems = append(cl.problems, problems...)
		for _, k := range w.keygate {
			cl.problems = append(cl.problems, k.inv.problems()...)
			cl.problems = append(cl.problems, cl.keygateProblems(w, k)...)
			allKeygate = append(allKeygate, k.inv)
			switch k.inv.cmd {
			case "serve":
				serve = append(serve, w)
			case "sidecar":
				sidecars = append(sidecars, w)
			}
		}
	}
	if len(serve) != 1 {
		add("want one workload running keygate serve, found %d", len(serve))
	}
	if len(sidecars) == 0 {
		add("no workload runs the keygate sidecar")
	}
	cl.problems = append(cl.problems, shared(allKeygate)...)

	// Services: every port reaches a container port; in front of a sidecar,
	// the sidecar's proxy port, never the app.
	for _, s := range cl.services {
		for _, sp := range s.spec.Ports {
			targets, err := cl.target(s, sp.Port, "")
			if err != nil {
				add("%v", err)
				continue
			}
			for w, port := range targets {
				for _, k := range w.keygate {
					switch {
					case k.inv.cmd == "serve" && port != k.inv.port("listen"):
						add("%s port %d reaches %d, not keygate serve's --listen %q", s.obj, sp.Port, port, k.inv.value("listen"))
					case k.inv.cmd == "sidecar" && port != k.inv.port("listen"):
						add("%s port %d reaches %d in %s, not the sidecar's --listen %q: clients would bypass the key check", s.obj, sp.Port, port, w.obj, k.inv.value("listen"))
					}
				}
			}
		}
	}

	// PodDisruptionBudgets: each selects a workload and lets a node drain.
	pdbFor := map[*workload]bool{}
	for _, o := range cl.objects {
		if o.Kind != "PodDisruptionBudget" {
			continue
		}
		var pdb struct {
			Spec struct {
				MinAvailable   *intOrString  `yaml:"minAvailable"`
				MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
				Selector       labelSelector `yaml:"selector"`
			} `yaml:"spec"`
		}
		decodeLoose(o.raw, &pdb)
		n := 0
		for _, w := range cl.workloads {
			if !pdb.Spec.Selector.empty() && pdb.Spec.Selector.matches(w.labels()) {
				n++
				pdbFor[w] = true
				if m := pdb.Spec.MinAvailable; m != nil && m.name == "" && m.num >= w.replicas() {
					add("%s: minAvailable %d with %d replicas of %s blocks every node drain", o, m.num, w.replicas(), w.obj)
				}
			}
		}
		if n == 0 {
			add("%s selects no workload", o)
		}
	}
	for _, w := range serve {
		if !pdbFor[w] {
			add("%s: no PodDisruptionBudget", w.obj)
		}
	}

	// NetworkPolicies: each selects something, and its ports exist there.
	for _, np := range cl.netpols {
		var sel []*workload
		for _, w := range cl.workloads {
			if np.spec.PodSelector.matches(w.labels()) {
				sel = append(sel, w)
			}
		}
		if len(sel) == 0 {
			add("%s selects no workload", np.obj)
		}
		for _, rule := range np.spec.Ingress {
			for _, rp := range rule.Ports {
				for _, w := range sel {
					if rp.Port != nil && rp.Port.name != "" {
						if _, _, ok := w.port(*rp.Port); !ok {
							add("%s: port %s is not a port of %s", np.obj, rp.Port, w.obj)
						}
					}
				}
			}
		}
	}
	for _, w := range serve {
		port := w.keygate[0].inv.port("listen")
		if !cl.admits(w, port, client{"some-team", map[string]string{adminClientLabel: "true"}}) {
			add("%s: a pod labelled %s=true cannot reach the admin API on port %d", w.obj, adminClientLabel, port)
		}
		if cl.admits(w, port, client{cl.namespace, map[string]string{"app": "anything"}}) {
			add("%s: any pod can reach the admin API on port %d: no NetworkPolicy limits it to pods labelled %s", w.obj, port, adminClientLabel)
		}
	}
	for _, w := range sidecars {
		for _, k := range w.keygate {
			if k.inv.cmd != "sidecar" {
				continue
			}
			if !cl.admits(w, k.inv.port("listen"), client{"anywhere", map[string]string{}}) {
				add("%s: clients cannot reach the sidecar's port %d", w.obj, k.inv.port("listen"))
			}
			u, err := url.Parse(k.inv.value("upstream"))
			if err != nil || !isLoopback(u.Hostname()) {
				add("%s: the sidecar's upstream %q is not on localhost: the app belongs in the same pod, behind it", w.obj, k.inv.value("upstream"))
				continue
			}
			appPort, _ := strconv.Atoi(u.Port())
			if cl.admits(w, appPort, client{cl.namespace, map[string]string{}}) {
				add("%s: nothing keeps other pods off the app's own port %d (NetworkPolicy)", w.obj, appPort)
			}
		}
	}

	// Every keygate process reaches its Redis.
	for _, w := range cl.workloads {
		for _, k := range w.keygate {
			u, err := url.Parse(k.inv.value("redis-url"))
			if err != nil || u.Hostname() == "" {
				continue
			}
			s, err := cl.serviceByHost(u.Hostname())
			if err != nil {
				add("%s: KEYGATE_REDIS_URL: %v", k.inv.where, err)
				continue
			}
			port, _ := strconv.Atoi(u.Port())
			if port == 0 {
				port = 6379
			}
			targets, err := cl.target(s, port, "")
			if err != nil {
				add("%s: KEYGATE_REDIS_URL: %v", k.inv.where, err)
				continue
			}
			for rw, rp := range targets {
				if !cl.admits(rw, rp, client{cl.namespace, w.labels()}) {
					add("%s: a NetworkPolicy keeps it from Redis (%s port %d): label the pod", k.inv.where, rw.obj, rp)
				}
			}
		}
	}

	// Secrets hold placeholders, never real values.
	for _, w := range cl.workloads {
		for _, k := range w.keygate {
			for _, name := range []string{"KEYGATE_ADMIN_TOKENS", "KEYGATE_HASH_KEY"} {
				if v, ok := k.inv.env[name]; ok && !strings.Contains(v, "CHANGE-ME") {
					add("%s: %s is %q: the committed value must be a CHANGE-ME placeholder", k.inv.where, name, v)
				}
			}
		}
	}

	cl.checkMonitoring()
	cl.checkIngresses()
	report(t, cl.problems)
}

// podProblems checks what every pod of the manifests must have: a locked
// down security context and resources.
func podProblems(w *workload) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	podSC := w.pod.SecurityContext
	for i := range w.pod.Containers {
		c := &w.pod.Containers[i]
		where := fmt.Sprintf("%s container %s", w.obj, c.Name)
		sc := c.SecurityContext
		if sc == nil {
			sc = &securityContext{}
		}
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && podSC != nil && podSC.RunAsNonRoot != nil && *podSC.RunAsNonRoot)
		if !nonRoot {
			add("%s: runAsNonRoot is not true", where)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 || sc.RunAsUser == nil && podSC != nil && podSC.RunAsUser != nil && *podSC.RunAsUser == 0 {
			add("%s: runs as uid 0", where)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add("%s: readOnlyRootFilesystem is not true", where)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add("%s: allowPrivilegeEscalation is not false", where)
		}
		if sc.Privileged != nil && *sc.Privileged {
			add("%s: privileged", where)
		}
		if sc.Capabilities == nil || !contains(sc.Capabilities.Drop, "ALL") {
			add("%s: capabilities.drop lacks ALL", where)
		} else if len(sc.Capabilities.Add) > 0 {
			add("%s: adds capabilities %v", where, sc.Capabilities.Add)
		}
		for _, r := range []string{"cpu", "memory"} {
			if c.Resources.Requests[r] == "" {
				add("%s: no %s request", where, r)
			}
		}
		if c.Resources.Limits["memory"] == "" {
			add("%s: no memory limit", where)
		}
	}
	if g := w.pod.TerminationGracePeriodSeconds; g != nil && len(w.keygate) > 0 && *g <= drainSeconds {
		add("%s: terminationGracePeriodSeconds %d does not cover keygate's %d s drain", w.obj, *g, drainSeconds)
	}
	return out
}

// keygateProblems checks one keygate container against the binary: ports,
// probes, scrape annotations, and the variables Kubernetes itself injects.
func (cl *cluster) keygateProblems(w *workload, k *kgContainer) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, k.inv.where+": "+fmt.Sprintf(format, args...)) }
	inv, c := k.inv, k.c
	if _, ok := commands[inv.cmd]; !ok {
		return out // inv.problems says why
	}
	declared := map[int]string{}
	for _, p := range c.Ports {
		declared[p.ContainerPort] = p.Name
	}
	listeners := []string{"listen"}
	if inv.cmd == "sidecar" {
		listeners = append(listeners, "ops-listen")
	}
	for _, flag := range listeners {
		if _, ok := declared[inv.port(flag)]; !ok {
			add("--%s %q: port %d is not among the containerPorts %v", flag, inv.value(flag), inv.port(flag), declared)
		}
	}
	for p, name := range declared {
		if p != inv.port("listen") && (inv.cmd != "sidecar" || p != inv.port("ops-listen")) {
			add("containerPort %d (%s) is none of keygate %s's listeners", p, name, inv.cmd)
		}
	}
	health := inv.healthFlag()
	host, healthPort, _ := splitHostPort(inv.value(health))
	if isLoopback(host) {
		add("--%s %q: the kubelet's probes and Prometheus cannot reach a loopback address; set %s=:%d", health, inv.value(health), envFor(health), healthPort)
	}
	for kind, pr := range map[string]*k8sProbe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if pr == nil {
			if kind != "startup" {
				add("no %s probe", kind)
			}
			continue
		}
		if pr.HTTPGet == nil {
			add("%s probe is not httpGet", kind)
			continue
		}
		if pr.HTTPGet.Scheme != "" && pr.HTTPGet.Scheme != "HTTP" {
			add("%s probe scheme %s: keygate serves plain HTTP", kind, pr.HTTPGet.Scheme)
		}
		if port := containerPortOf(c, pr.HTTPGet.Port); port != healthPort {
			add("%s probe port %s is %d, not the %s listener (%d) where keygate %s serves %s", kind, pr.HTTPGet.Port, port, health, healthPort, inv.cmd, pr.HTTPGet.Path)
		}
	}
	// Kubernetes sets NAME_SERVICE_HOST, NAME_PORT, … for every Service of
	// the namespace unless enableServiceLinks is false: none may collide
	// with a variable keygate reads.
	if w.pod.EnableServiceLinks == nil || *w.pod.EnableServiceLinks {
		for _, s := range cl.services {
			for _, v := range serviceLinkVars(s) {
				if f, ok := commands[inv.cmd].byEnv[v]; ok {
					add("Service %s makes Kubernetes set %s, which keygate reads as --%s: set enableServiceLinks: false", s.obj.Metadata.Name, v, f.name)
				}
			}
		}
	}
	// Prometheus scrape annotations point at keygate's /metrics listener.
	ann := w.spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		add("the pod has no prometheus.io/scrape: \"true\" annotation")
	} else if metricsPort := metricsPortOf(w); metricsPort == 0 {
		add("prometheus.io/port %q is not the /metrics port of a keygate container in the pod", ann["prometheus.io/port"])
	} else if !cl.admits(w, metricsPort, client{monitoringNamespace, nil}) {
		add("a NetworkPolicy keeps Prometheus (namespace %s) from port %d", monitoringNamespace, metricsPort)
	}
	return out
}

// metricsPortOf is the pod's annotated scrape port when a keygate container
// serves /metrics there, else 0.
func metricsPortOf(w *workload) int {
	ann := w.spec.Template.Metadata.Annotations
	p, _ := strconv.Atoi(ann["prometheus.io/port"])
	if path := ann["prometheus.io/path"]; path != "" && path != "/metrics" {
		return 0
	}
	for _, k := range w.keygate {
		if _, ok := commands[k.inv.cmd]; ok && p == k.inv.port(k.inv.healthFlag()) {
			return p
		}
	}
	return 0
}

// containerPortOf resolves a probe's port within its container.
func containerPortOf(c *container, p intOrString) int {
	if p.name == "" {
		return p.num
	}
	for _, cp := range c.Ports {
		if cp.Name == p.name {
			return cp.ContainerPort
		}
	}
	return 0
}

// serviceLinkVars are the variables the kubelet derives from a Service.
func serviceLinkVars(s *service) []string {
	name := strings.ToUpper(strings.ReplaceAll(s.obj.Metadata.Name, "-", "_"))
	out := []string{name + "_SERVICE_HOST", name + "_SERVICE_PORT", name + "_PORT"}
	for _, p := range s.spec.Ports {
		if p.Name != "" {
			out = append(out, name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")))
		}
		base := fmt.Sprintf("%s_PORT_%d_TCP", name, p.Port)
		out = append(out, base, base+"_PROTO", base+"_PORT", base+"_ADDR")
	}
	return out
}

// checkMonitoring checks ServiceMonitors and PodMonitors against the
// Services and pods they scrape.
func (cl *cluster) checkMonitoring() {
	for _, o := range cl.objects {
		var m struct {
			Spec struct {
				Selector            labelSelector `yaml:"selector"`
				Endpoints           []monEndpoint `yaml:"endpoints"`
				PodMetricsEndpoints []monEndpoint `yaml:"podMetricsEndpoints"`
			} `yaml:"spec"`
		}
		switch o.Kind {
		case "ServiceMonitor":
			decodeLoose(o.raw, &m)
			var svcs []*service
			for _, s := range cl.services {
				if m.Spec.Selector.matches(s.obj.Metadata.Labels) && !m.Spec.Selector.empty() {
					svcs = append(svcs, s)
				}
			}
			if len(svcs) == 0 {
				cl.add("%s selects no Service", o)
			}
			for _, s := range svcs {
				for _, ep := range m.Spec.Endpoints {
					targets, err := cl.target(s, 0, ep.Port)
					if err != nil {
						cl.add("%s: %v", o, err)
						continue
					}
					for w, port := range targets {
						cl.checkScrape(o, w, port, ep.Path)
					}
				}
			}
		case "PodMonitor":
			decodeLoose(o.raw, &m)
			n := 0
			for _, w := range cl.workloads {
				if m.Spec.Selector.empty() || !m.Spec.Selector.matches(w.labels()) {
					continue
				}
				n++
				for _, ep := range m.Spec.PodMetricsEndpoints {
					port, _, ok := w.port(intOrString{name: ep.Port})
					if !ok {
						cl.add("%s: %s has no port named %q", o, w.obj, ep.Port)
						continue
					}
					cl.checkScrape(o, w, port, ep.Path)
				}
			}
			if n == 0 {
				cl.add("%s selects no workload", o)
			}
		}
	}
}

type monEndpoint struct {
	Port string `yaml:"port"`
	Path string `yaml:"path"`
}

func (cl *cluster) checkScrape(o *k8sObject, w *workload, port int, path string) {
	if path != "" && path != "/metrics" {
		cl.add("%s: path %q: keygate serves /metrics", o, path)
	}
	for _, k := range w.keygate {
		if _, ok := commands[k.inv.cmd]; ok && port == k.inv.port(k.inv.healthFlag()) {
			if !cl.admits(w, port, client{monitoringNamespace, nil}) {
				cl.add("%s: a NetworkPolicy keeps Prometheus (namespace %s) from %s port %d", o, monitoringNamespace, w.obj, port)
			}
			return
		}
	}
	cl.add("%s: %s port %d is not where a keygate container serves /metrics", o, w.obj, port)
}

// forwardAuth is an Ingress's auth-url, resolved.
type forwardAuth struct {
	ingress *k8sObject
	url     *url.URL
	headers []string // auth-response-headers
	serve   *workload
}

func (cl *cluster) checkIngresses() []forwardAuth {
	var out []forwardAuth
	for _, o := range cl.objects {
		if o.Kind != "Ingress" {
			continue
		}
		var ing struct {
			Spec struct {
				Rules []struct {
					HTTP struct {
						Paths []struct {
							Backend struct {
								Service struct {
									Name string `yaml:"name"`
									Port struct {
										Name   string `yaml:"name"`
										Number int    `yaml:"number"`
									} `yaml:"port"`
								} `yaml:"service"`
							} `yaml:"backend"`
						} `yaml:"paths"`
					} `yaml:"http"`
				} `yaml:"rules"`
			} `yaml:"spec"`
		}
		decodeLoose(o.raw, &ing)
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				be := p.Backend.Service
				s, err := cl.serviceByHost(be.Name)
				if err != nil {
					cl.add("%s: backend: %v", o, err)
					continue
				}
				targets, err := cl.target(s, be.Port.Number, be.Port.Name)
				if err != nil {
					cl.add("%s: backend: %v", o, err)
					continue
				}
				for w, port := range targets {
					if !cl.admits(w, port, client{ingressNamespace, nil}) {
						cl.add("%s: a NetworkPolicy keeps the ingress controller (namespace %s) from %s port %d", o, ingressNamespace, w.obj, port)
					}
				}
			}
		}
		raw := o.Metadata.Annotations["nginx.ingress.kubernetes.io/auth-url"]
		if raw == "" {
			continue
		}
		fa := forwardAuth{ingress: o}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" {
			cl.add("%s: auth-url %q is not an http:// URL", o, raw)
			continue
		}
		fa.url = u
		if u.Path != "/forward-auth" && !strings.HasPrefix(u.Path, "/forward-auth/") {
			cl.add("%s: auth-url path %q: keygate serve answers /forward-auth and below", o, u.Path)
		}
		s, err := cl.serviceByHost(u.Hostname())
		if err != nil {
			cl.add("%s: auth-url: %v", o, err)
			continue
		}
		port, _ := strconv.Atoi(u.Port())
		if port == 0 {
			port = 80
		}
		targets, err := cl.target(s, port, "")
		if err != nil {
			cl.add("%s: auth-url: %v", o, err)
			continue
		}
		for w, tp := range targets {
			isServe := false
			for _, k := range w.keygate {
				if k.inv.cmd == "serve" && tp == k.inv.port("listen") {
					isServe = true
					fa.serve = w
				}
			}
			if !isServe {
				cl.add("%s: auth-url reaches %s port %d, which is not keygate serve's listener", o, w.obj, tp)
			}
			if !cl.admits(w, tp, client{ingressNamespace, nil}) {
				cl.add("%s: a NetworkPolicy keeps the ingress controller (namespace %s) from keygate serve", o, ingressNamespace)
			}
		}
		for _, h := range strings.Split(o.Metadata.Annotations["nginx.ingress.kubernetes.io/auth-response-headers"], ",") {
			if h = strings.TrimSpace(h); h != "" {
				fa.headers = append(fa.headers, h)
			}
		}
		if len(fa.headers) == 0 {
			cl.add("%s: no auth-response-headers: the app would not learn whose key it was", o)
		}
		out = append(out, fa)
	}
	return out
}

// TestKubernetesRuns runs every keygate container as the manifests
// configure it: probes and scrape paths answer as they must, serve and the
// sidecar agree (the README session), the sidecar's public paths and route
// scopes work, and the ingress auth-url returns the headers the Ingress
// forwards.
func TestKubernetesRuns(t *testing.T) {
	cl := loadCluster(t)
	var serveInv, sidecarInv *invocation
	for _, w := range cl.workloads {
		for _, k := range w.keygate {
			if _, ok := commands[k.inv.cmd]; !ok {
				t.Fatalf("%s: not serve or sidecar (see TestKubernetesManifests)", k.inv.where)
			}
			var probes []probe
			for _, p := range []struct {
				kind string
				pr   *k8sProbe
			}{{"liveness", k.c.LivenessProbe}, {"readiness", k.c.ReadinessProbe}, {"liveness", k.c.StartupProbe}} {
				if p.pr != nil && p.pr.HTTPGet != nil {
					probes = append(probes, probe{k.inv.where, p.kind, p.pr.HTTPGet.Path, containerPortOf(k.c, p.pr.HTTPGet.Port)})
				}
			}
			ann := w.spec.Template.Metadata.Annotations
			if port, err := strconv.Atoi(ann["prometheus.io/port"]); err == nil {
				path := ann["prometheus.io/path"]
				if path == "" {
					path = "/metrics"
				}
				probes = append(probes, probe{k.inv.where + " prometheus.io annotations", "metrics", path, port})
			}
			checkProbes(t, k.inv, probes)
			switch k.inv.cmd {
			case "serve":
				serveInv = k.inv
			case "sidecar":
				sidecarInv = k.inv
			}
		}
	}
	if serveInv == nil || sidecarInv == nil {
		t.Fatal("the manifests need a keygate serve and a keygate sidecar")
	}
	serve, sidecar, _, _ := session(t, serveInv, sidecarInv)
	admin := strings.Split(serveInv.value("admin-tokens"), ",")[0]

	// The sidecar's --public and --require-scopes, as configured.
	for _, prefix := range strings.Split(sidecarInv.value("public"), ";") {
		if prefix = strings.TrimSpace(prefix); prefix != "" {
			if status, _ := get(t, "http://"+sidecar.listen+prefix, ""); status != 200 {
				t.Errorf("%s: public path %s without a key: %d, want 200", sidecarInv.where, prefix, status)
			}
		}
	}
	for _, rule := range strings.Split(sidecarInv.value("require-scopes"), ";") {
		route, scopes, ok := strings.Cut(strings.TrimSpace(rule), "=")
		if !ok {
			continue
		}
		method, path := "GET", route
		if m, p, ok := strings.Cut(route, " "); ok {
			method, path = m, p
		}
		scopeJSON := `"` + strings.Join(strings.Split(scopes, ","), `","`) + `"`
		without := createKey(t, serve.listen, admin, `{"name":"no scopes","subject":"user_1"}`)
		with := createKey(t, serve.listen, admin, `{"name":"scoped","subject":"user_1","scopes":[`+scopeJSON+`]}`)
		if status, _, _ := do(t, method, "http://"+sidecar.listen+path, without.Secret, ""); status != 403 {
			t.Errorf("%s: %s %s with a key lacking %s: %d, want 403", sidecarInv.where, method, path, scopes, status)
		}
		if status, _, _ := do(t, method, "http://"+sidecar.listen+path, with.Secret, ""); status != 200 {
			t.Errorf("%s: %s %s with a key holding %s: %d, want 200", sidecarInv.where, method, path, scopes, status)
		}
	}

	// ingress-nginx: the auth-url answers 200 with the headers the Ingress
	// forwards, exactly the identity headers keygate sets.
	cl.problems = nil
	for _, fa := range cl.checkIngresses() {
		if fa.serve == nil {
			continue
		}
		var scopes []string
		for _, s := range strings.Split(fa.url.Query().Get("scopes"), ",") {
			if s != "" {
				scopes = append(scopes, `"`+s+`"`)
			}
		}
		key := createKey(t, serve.listen, admin, `{"name":"ingress","subject":"user_7","claims":{"plan":"pro"},"scopes":[`+strings.Join(scopes, ",")+`]}`)
		authURL := "http://" + serve.listen + fa.url.RequestURI()
		status, body, h := do(t, "GET", authURL, key.Secret, "")
		if status != 200 {
			t.Errorf("%s: auth-url with a valid key: %d %s, want 200", fa.ingress, status, body)
			continue
		}
		var identity []string
		for name := range h {
			if strings.HasPrefix(name, "X-Api-Key-") {
				identity = append(identity, name)
			}
		}
		sort.Strings(identity)
		annotated := append([]string{}, fa.headers...)
		for i := range annotated {
			annotated[i] = http.CanonicalHeaderKey(annotated[i])
		}
		sort.Strings(annotated)
		if strings.Join(identity, ",") != strings.Join(annotated, ",") {
			t.Errorf("%s: auth-response-headers %v, but keygate answers with %v", fa.ingress, annotated, identity)
		}
		if status, _, _ := do(t, "GET", authURL, "", ""); status != 401 {
			t.Errorf("%s: auth-url without a key: %d, want 401", fa.ingress, status)
		}
		if len(scopes) > 0 {
			bare := createKey(t, serve.listen, admin, `{"name":"ingress bare","subject":"user_7"}`)
			if status, _, _ := do(t, "GET", authURL, bare.Secret, ""); status != 403 {
				t.Errorf("%s: auth-url with a key lacking %v: %d, want 403", fa.ingress, scopes, status)
			}
		}
	}
	sidecar.stop(t)
	serve.stop(t)
}
