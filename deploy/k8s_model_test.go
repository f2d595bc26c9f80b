package deploy

// The Kubernetes manifests as a model: objects, workloads and their keygate
// containers, Services, NetworkPolicies. k8s_test.go checks it.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// What the manifests assume about the cluster, as k8s/networkpolicy.yaml
// and the README say.
const (
	ingressNamespace    = "ingress-nginx"           // the ingress-nginx controller
	monitoringNamespace = "monitoring"              // Prometheus
	adminClientLabel    = "keygate.io/admin-client" // pods allowed to call the admin API
	// drainSeconds is how long keygate drains requests after SIGTERM
	// (cmd/keygate/serve.go, runServers): a grace period must exceed it.
	drainSeconds = 20
)

// kinds maps every kind the manifests may use to its apiVersion.
var kinds = map[string]string{
	"Namespace":           "v1",
	"ConfigMap":           "v1",
	"Secret":              "v1",
	"Service":             "v1",
	"ServiceAccount":      "v1",
	"Deployment":          "apps/v1",
	"StatefulSet":         "apps/v1",
	"PodDisruptionBudget": "policy/v1",
	"NetworkPolicy":       "networking.k8s.io/v1",
	"Ingress":             "networking.k8s.io/v1",
	"ServiceMonitor":      "monitoring.coreos.com/v1",
	"PodMonitor":          "monitoring.coreos.com/v1",
}

// optionalManifests may stay out of kustomization.yaml: they need CRDs or
// a controller the default install does not assume.
var optionalManifests = map[string]bool{"monitoring.yaml": true, "ingress-nginx.yaml": true}

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	file       string
	optional   bool // in a manifest kustomization.yaml does not apply
	raw        map[string]any
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

func (o *k8sObject) String() string {
	return fmt.Sprintf("k8s/%s: %s %s", o.file, o.Kind, o.Metadata.Name)
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

func (s *labelSelector) empty() bool {
	return s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0)
}

func (s *labelSelector) matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// intOrString is a Kubernetes port: a number or a port name.
type intOrString struct {
	num  int
	name string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a port must be a number or a name", n.Line)
	}
	if n.Tag == "!!int" {
		i, err := strconv.Atoi(n.Value)
		v.num = i
		return err
	}
	v.name = n.Value
	return nil
}

func (v intOrString) String() string {
	if v.name != "" {
		return strconv.Quote(v.name)
	}
	return strconv.Itoa(v.num)
}

// podSpec is a PodSpec, decoded strictly: a misspelt field is an error. The
// fields this test does not look at are there so that real ones are accepted.
type podSpec struct {
	Containers                    []container         `yaml:"containers"`
	InitContainers                []container         `yaml:"initContainers"`
	SecurityContext               *podSecurityContext `yaml:"securityContext"`
	EnableServiceLinks            *bool               `yaml:"enableServiceLinks"`
	AutomountServiceAccountToken  *bool               `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int                `yaml:"terminationGracePeriodSeconds"`

	ActiveDeadlineSeconds     any `yaml:"activeDeadlineSeconds"`
	Affinity                  any `yaml:"affinity"`
	DNSConfig                 any `yaml:"dnsConfig"`
	DNSPolicy                 any `yaml:"dnsPolicy"`
	EphemeralContainers       any `yaml:"ephemeralContainers"`
	HostAliases               any `yaml:"hostAliases"`
	HostIPC                   any `yaml:"hostIPC"`
	HostNetwork               any `yaml:"hostNetwork"`
	HostPID                   any `yaml:"hostPID"`
	HostUsers                 any `yaml:"hostUsers"`
	Hostname                  any `yaml:"hostname"`
	ImagePullSecrets          any `yaml:"imagePullSecrets"`
	NodeName                  any `yaml:"nodeName"`
	NodeSelector              any `yaml:"nodeSelector"`
	OS                        any `yaml:"os"`
	Overhead                  any `yaml:"overhead"`
	PreemptionPolicy          any `yaml:"preemptionPolicy"`
	Priority                  any `yaml:"priority"`
	PriorityClassName         any `yaml:"priorityClassName"`
	ReadinessGates            any `yaml:"readinessGates"`
	ResourceClaims            any `yaml:"resourceClaims"`
	Resources                 any `yaml:"resources"`
	RestartPolicy             any `yaml:"restartPolicy"`
	RuntimeClassName          any `yaml:"runtimeClassName"`
	SchedulerName             any `yaml:"schedulerName"`
	SchedulingGates           any `yaml:"schedulingGates"`
	ServiceAccount            any `yaml:"serviceAccount"`
	ServiceAccountName        any `yaml:"serviceAccountName"`
	SetHostnameAsFQDN         any `yaml:"setHostnameAsFQDN"`
	ShareProcessNamespace     any `yaml:"shareProcessNamespace"`
	Subdomain                 any `yaml:"subdomain"`
	Tolerations               any `yaml:"tolerations"`
	TopologySpreadConstraints any `yaml:"topologySpreadConstraints"`
	Volumes                   any `yaml:"volumes"`
}

type podSecurityContext struct {
	RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	RunAsUser    *int  `yaml:"runAsUser"`
	RunAsGroup   *int  `yaml:"runAsGroup"`

	AppArmorProfile          any `yaml:"appArmorProfile"`
	FSGroup                  any `yaml:"fsGroup"`
	FSGroupChangePolicy      any `yaml:"fsGroupChangePolicy"`
	SELinuxChangePolicy      any `yaml:"seLinuxChangePolicy"`
	SELinuxOptions           any `yaml:"seLinuxOptions"`
	SeccompProfile           any `yaml:"seccompProfile"`
	SupplementalGroups       any `yaml:"supplementalGroups"`
	SupplementalGroupsPolicy any `yaml:"supplementalGroupsPolicy"`
	Sysctls                  any `yaml:"sysctls"`
	WindowsOptions           any `yaml:"windowsOptions"`
}

type container struct {
	Name            string           `yaml:"name"`
	Image           string           `yaml:"image"`
	ImagePullPolicy string           `yaml:"imagePullPolicy"`
	Command         []string         `yaml:"command"`
	Args            []string         `yaml:"args"`
	Env             []envVar         `yaml:"env"`
	EnvFrom         []envFromSource  `yaml:"envFrom"`
	Ports           []containerPort  `yaml:"ports"`
	LivenessProbe   *k8sProbe        `yaml:"livenessProbe"`
	ReadinessProbe  *k8sProbe        `yaml:"readinessProbe"`
	StartupProbe    *k8sProbe        `yaml:"startupProbe"`
	Resources       resources        `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`

	Lifecycle                any `yaml:"lifecycle"`
	ResizePolicy             any `yaml:"resizePolicy"`
	RestartPolicy            any `yaml:"restartPolicy"`
	Stdin                    any `yaml:"stdin"`
	StdinOnce                any `yaml:"stdinOnce"`
	TerminationMessagePath   any `yaml:"terminationMessagePath"`
	TerminationMessagePolicy any `yaml:"terminationMessagePolicy"`
	TTY                      any `yaml:"tty"`
	VolumeDevices            any `yaml:"volumeDevices"`
	VolumeMounts             any `yaml:"volumeMounts"`
	WorkingDir               any `yaml:"workingDir"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     any    `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
		ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		FieldRef        *struct {
			APIVersion string `yaml:"apiVersion"`
			FieldPath  string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		ResourceFieldRef *struct {
			ContainerName string `yaml:"containerName"`
			Resource      string `yaml:"resource"`
			Divisor       any    `yaml:"divisor"`
		} `yaml:"resourceFieldRef"`
	} `yaml:"valueFrom"`
}

type keyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional *bool  `yaml:"optional"`
}

type envFromSource struct {
	Prefix       string  `yaml:"prefix"`
	ConfigMapRef *keyRef `yaml:"configMapRef"`
	SecretRef    *keyRef `yaml:"secretRef"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
	HostIP        any    `yaml:"hostIP"`
	HostPort      any    `yaml:"hostPort"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path        string      `yaml:"path"`
		Port        intOrString `yaml:"port"`
		Scheme      string      `yaml:"scheme"`
		Host        string      `yaml:"host"`
		HTTPHeaders any         `yaml:"httpHeaders"`
	} `yaml:"httpGet"`
	Exec                          any `yaml:"exec"`
	GRPC                          any `yaml:"grpc"`
	TCPSocket                     any `yaml:"tcpSocket"`
	InitialDelaySeconds           any `yaml:"initialDelaySeconds"`
	PeriodSeconds                 any `yaml:"periodSeconds"`
	TimeoutSeconds                any `yaml:"timeoutSeconds"`
	FailureThreshold              any `yaml:"failureThreshold"`
	SuccessThreshold              any `yaml:"successThreshold"`
	TerminationGracePeriodSeconds any `yaml:"terminationGracePeriodSeconds"`
}

type resources struct {
	Requests map[string]string `yaml:"requests"`
	Limits   map[string]string `yaml:"limits"`
	Claims   any               `yaml:"claims"`
}

type securityContext struct {
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	Capabilities             *struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	Privileged *bool `yaml:"privileged"`

	AppArmorProfile any `yaml:"appArmorProfile"`
	ProcMount       any `yaml:"procMount"`
	RunAsGroup      any `yaml:"runAsGroup"`
	SELinuxOptions  any `yaml:"seLinuxOptions"`
	SeccompProfile  any `yaml:"seccompProfile"`
	WindowsOptions  any `yaml:"windowsOptions"`
}

// workload is a Deployment or StatefulSet and its pod.
type workload struct {
	obj  *k8sObject
	spec struct {
		Replicas *int          `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
		} `yaml:"template"`
	}
	pod     podSpec
	keygate []*kgContainer
}

func (w *workload) replicas() int {
	if w.spec.Replicas == nil {
		return 1
	}
	return *w.spec.Replicas
}

func (w *workload) labels() map[string]string { return w.spec.Template.Metadata.Labels }

// kgContainer is a container running the keygate image.
type kgContainer struct {
	c   *container
	inv *invocation
}

// port resolves a port of the pod (a name or a number) to a container port.
func (w *workload) port(p intOrString) (int, *container, bool) {
	for i := range w.pod.Containers {
		c := &w.pod.Containers[i]
		for _, cp := range c.Ports {
			if (p.name != "" && cp.Name == p.name) || (p.name == "" && cp.ContainerPort == p.num) {
				return cp.ContainerPort, c, true
			}
		}
	}
	return 0, nil, false
}

type service struct {
	obj  *k8sObject
	spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string       `yaml:"name"`
			Port       int          `yaml:"port"`
			TargetPort *intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	}
}

type netpolPeer struct {
	PodSelector       *labelSelector `yaml:"podSelector"`
	NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	IPBlock           any            `yaml:"ipBlock"`
}

type netpol struct {
	obj  *k8sObject
	spec struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From  []netpolPeer `yaml:"from"`
			Ports []struct {
				Port     *intOrString `yaml:"port"`
				Protocol string       `yaml:"protocol"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	}
}

// cluster is every manifest in k8s/, as they would be applied together.
type cluster struct {
	namespace  string
	repo       string
	objects    []*k8sObject
	workloads  []*workload
	services   []*service
	netpols    []*netpol
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
	problems   []string
}

func (cl *cluster) add(format string, args ...any) {
	cl.problems = append(cl.problems, fmt.Sprintf(format, args...))
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Labels     any      `yaml:"labels"`
	Images     []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
		Digest  string `yaml:"digest"`
	} `yaml:"images"`

	// The rest of a Kustomization, accepted and not inspected.
	BuildMetadata         any `yaml:"buildMetadata"`
	CommonAnnotations     any `yaml:"commonAnnotations"`
	CommonLabels          any `yaml:"commonLabels"`
	Components            any `yaml:"components"`
	ConfigMapGenerator    any `yaml:"configMapGenerator"`
	Generators            any `yaml:"generators"`
	GeneratorOptions      any `yaml:"generatorOptions"`
	NamePrefix            any `yaml:"namePrefix"`
	NameSuffix            any `yaml:"nameSuffix"`
	Patches               any `yaml:"patches"`
	PatchesJSON6902       any `yaml:"patchesJson6902"`
	PatchesStrategicMerge any `yaml:"patchesStrategicMerge"`
	Replacements          any `yaml:"replacements"`
	Replicas              any `yaml:"replicas"`
	SecretGenerator       any `yaml:"secretGenerator"`
	SortOptions           any `yaml:"sortOptions"`
	Transformers          any `yaml:"transformers"`
	Validators            any `yaml:"validators"`
}

func loadCluster(t *testing.T) *cluster {
	t.Helper()
	loadDockerfile(t)
	cl := &cluster{configMaps: map[string]map[string]string{}, secrets: map[string]map[string]string{}, repo: keygateRepo(t)}
	var k kustomization
	if err := decodeStrict([]byte(readFile(t, "k8s/kustomization.yaml")), &k); err != nil {
		t.Fatalf("k8s/kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		cl.add("k8s/kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	cl.namespace = k.Namespace
	inKustomization := map[string]bool{}
	for _, r := range k.Resources {
		inKustomization[r] = true
		if _, err := os.Stat(filepath.Join(repoRoot, "deploy", "k8s", r)); err != nil {
			cl.add("k8s/kustomization.yaml: resource %s: %v", r, err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot, "deploy", "k8s", "*"))
	for _, path := range files {
		name := filepath.Base(path)
		if name == "kustomization.yaml" {
			continue
		}
		if !strings.HasSuffix(name, ".yaml") {
			cl.add("k8s/%s: manifests end in .yaml", name)
			continue
		}
		if !inKustomization[name] && !optionalManifests[name] {
			cl.add("k8s/%s is not in kustomization.yaml (only %v may stay out)", name, sortedKeys(optionalManifests))
		}
		cl.load(t, name, !inKustomization[name])
	}
	for _, w := range cl.workloads {
		cl.findKeygate(w)
	}
	return cl
}

// load decodes every document of one manifest.
func (cl *cluster) load(t *testing.T, file string, optional bool) {
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, "k8s/"+file)))
	for {
		var raw map[string]any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("k8s/%s: %v", file, err)
		}
		if raw == nil {
			continue
		}
		o := &k8sObject{file: file, optional: optional, raw: raw}
		if err := decodeLoose(raw, o); err != nil {
			t.Fatalf("k8s/%s: %v", file, err)
		}
		cl.objects = append(cl.objects, o)
		cl.problems = append(cl.problems, stringValues(o.String(), raw)...)
		if want, ok := kinds[o.Kind]; !ok {
			cl.add("%s: kind %q is not one this test knows (%v)", o, o.Kind, sortedKeys(kinds))
			continue
		} else if o.APIVersion != want {
			cl.add("%s: apiVersion %q, want %q", o, o.APIVersion, want)
		}
		if o.Metadata.Name == "" {
			cl.add("%s: no metadata.name", o)
		}
		if o.Kind == "Namespace" {
			if o.Metadata.Name != cl.namespace {
				cl.add("%s: kustomization.yaml's namespace is %q", o, cl.namespace)
			}
		} else if o.Metadata.Namespace != cl.namespace {
			// The optional manifests are applied with kubectl apply -f, so
			// they must name it; the others may, and then must agree.
			if optional || o.Metadata.Namespace != "" {
				cl.add("%s: namespace %q, want %q", o, o.Metadata.Namespace, cl.namespace)
			}
		}
		spec, _ := raw["spec"].(map[string]any)
		switch o.Kind {
		case "Deployment", "StatefulSet":
			w := &workload{obj: o}
			if err := decodeLoose(spec, &w.spec); err != nil {
				cl.add("%s: %v", o, err)
				continue
			}
			tmpl, _ := spec["template"].(map[string]any)
			b, _ := yaml.Marshal(tmpl["spec"])
			if err := decodeStrict(b, &w.pod); err != nil {
				cl.add("%s: pod spec: %v", o, err)
				continue
			}
			cl.workloads = append(cl.workloads, w)
		case "Service":
			s := &service{obj: o}
			if err := decodeLoose(spec, &s.spec); err != nil {
				cl.add("%s: %v", o, err)
			}
			cl.services = append(cl.services, s)
		case "NetworkPolicy":
			n := &netpol{obj: o}
			if err := decodeLoose(spec, &n.spec); err != nil {
				cl.add("%s: %v", o, err)
			}
			cl.netpols = append(cl.netpols, n)
		case "ConfigMap":
			var c struct {
				Data map[string]string `yaml:"data"`
			}
			decodeLoose(raw, &c)
			cl.configMaps[o.Metadata.Name] = c.Data
		case "Secret":
			var s struct {
				Data       map[string]string `yaml:"data"`
				StringData map[string]string `yaml:"stringData"`
			}
			decodeLoose(raw, &s)
			vals := map[string]string{}
			for k, v := range s.Data {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					cl.add("%s: data.%s is not base64", o, k)
				}
				vals[k] = string(b)
			}
			for k, v := range s.StringData {
				vals[k] = v
			}
			cl.secrets[o.Metadata.Name] = vals
		}
	}
}

// stringValues reports maps whose values Kubernetes requires to be strings
// (labels, annotations, selectors, ConfigMap and Secret data, env values)
// but that hold a number or a boolean: `port: 8080` where "8080" is needed.
func stringValues(where string, v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch k {
			case "labels", "annotations", "matchLabels", "data", "stringData", "nodeSelector":
				if m, ok := e.(map[string]any); ok {
					for mk, mv := range m {
						if _, ok := mv.(string); !ok {
							out = append(out, fmt.Sprintf("%s: %s.%s is %v, not a string: quote it", where, k, mk, mv))
						}
					}
				}
			case "env":
				if list, ok := e.([]any); ok {
					for _, item := range list {
						if m, ok := item.(map[string]any); ok {
							if val, has := m["value"]; has {
								if _, ok := val.(string); !ok {
									out = append(out, fmt.Sprintf("%s: env %v value %v is not a string: quote it", where, m["name"], val))
								}
							}
						}
					}
				}
			}
			out = append(out, stringValues(where, e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, stringValues(where, e)...)
		}
	}
	return out
}

func decodeStrict(b []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// findKeygate builds the invocation of every keygate container of w: the
// argv (ENTRYPOINT/command and CMD/args) and the environment Kubernetes
// would give it (envFrom, then env; Secrets and ConfigMaps resolved).
func (cl *cluster) findKeygate(w *workload) {
	df := dockerfileVal
	for i := range w.pod.Containers {
		c := &w.pod.Containers[i]
		isKeygate := imageRepo(c.Image) == cl.repo || strings.Contains(c.Image, "keygate") ||
			(len(c.Args) > 0 && (c.Args[0] == "serve" || c.Args[0] == "sidecar"))
		if !isKeygate {
			continue
		}
		where := fmt.Sprintf("%s container %s", w.obj, c.Name)
		if imageRepo(c.Image) != cl.repo {
			cl.add("%s: image %q, want %s (the image kustomization.yaml rewrites)", where, c.Image, cl.repo)
		}
		argv := c.Command
		if len(argv) == 0 {
			argv = df.entrypoint
			if len(c.Args) == 0 {
				argv = append(argv, df.cmd...)
			}
		}
		argv = append(append([]string{}, argv...), c.Args...)
		if len(argv) == 0 || argv[0] != df.binaryPath() {
			cl.add("%s: runs %q, not the image's %s", where, argv, df.binaryPath())
			continue
		}
		inv := &invocation{where: where, env: map[string]string{}}
		if len(argv) > 1 {
			inv.cmd, inv.args = argv[1], argv[2:]
		}
		for _, ef := range c.EnvFrom {
			var src map[string]string
			var ok bool
			switch {
			case ef.ConfigMapRef != nil:
				src, ok = cl.configMaps[ef.ConfigMapRef.Name]
				if !ok {
					cl.add("%s: envFrom ConfigMap %q does not exist", where, ef.ConfigMapRef.Name)
				}
			case ef.SecretRef != nil:
				src, ok = cl.secrets[ef.SecretRef.Name]
				if !ok {
					cl.add("%s: envFrom Secret %q does not exist", where, ef.SecretRef.Name)
				}
			}
			for k, v := range src {
				inv.env[ef.Prefix+k] = v
			}
		}
		for _, e := range c.Env {
			val, err := cl.envValue(w, c, e)
			if err != nil {
				cl.add("%s: env %s: %v", where, e.Name, err)
			}
			inv.env[e.Name] = val
		}
		w.keygate = append(w.keygate, &kgContainer{c: c, inv: inv})
	}
}

func (cl *cluster) envValue(w *workload, c *container, e envVar) (string, error) {
	if e.ValueFrom == nil {
		s, _ := e.Value.(string)
		return s, nil
	}
	vf := e.ValueFrom
	lookup := func(kind string, m map[string]map[string]string, r *keyRef) (string, error) {
		data, ok := m[r.Name]
		if !ok {
			return "", fmt.Errorf("%s %q does not exist", kind, r.Name)
		}
		v, ok := data[r.Key]
		if !ok {
			return "", fmt.Errorf("%s %q has no key %q", kind, r.Name, r.Key)
		}
		return v, nil
	}
	switch {
	case vf.SecretKeyRef != nil:
		return lookup("Secret", cl.secrets, vf.SecretKeyRef)
	case vf.ConfigMapKeyRef != nil:
		return lookup("ConfigMap", cl.configMaps, vf.ConfigMapKeyRef)
	case vf.FieldRef != nil:
		switch vf.FieldRef.FieldPath {
		case "metadata.namespace":
			return cl.namespace, nil
		case "metadata.name", "spec.nodeName":
			return w.obj.Metadata.Name + "-0", nil
		case "status.podIP", "status.hostIP":
			return "10.0.0.1", nil
		}
		return "", fmt.Errorf("fieldRef %s: this test cannot tell its value", vf.FieldRef.FieldPath)
	case vf.ResourceFieldRef != nil:
		r := vf.ResourceFieldRef
		target := c
		if r.ContainerName != "" {
			target = nil
			for i := range w.pod.Containers {
				if w.pod.Containers[i].Name == r.ContainerName {
					target = &w.pod.Containers[i]
				}
			}
			if target == nil {
				return "", fmt.Errorf("resourceFieldRef names container %q, not in the pod", r.ContainerName)
			}
		}
		kind, res, _ := strings.Cut(r.Resource, ".")
		var q string
		switch kind {
		case "limits":
			q = target.Resources.Limits[res]
		case "requests":
			q = target.Resources.Requests[res]
		}
		if q == "" || res != "memory" || r.Divisor != nil {
			return "", fmt.Errorf("resourceFieldRef %s: want limits.memory or requests.memory, set, without divisor", r.Resource)
		}
		n, err := bytesOf(q)
		return strconv.FormatInt(n, 10), err
	}
	return "", fmt.Errorf("valueFrom names no source")
}

// bytesOf reads a memory quantity: 256Mi, 1Gi, 500M, 1048576.
func bytesOf(q string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	for _, u := range units {
		if strings.HasSuffix(q, u.suffix) {
			n, err := strconv.ParseInt(strings.TrimSuffix(q, u.suffix), 10, 64)
			return n * u.mult, err
		}
	}
	return strconv.ParseInt(q, 10, 64)
}

// serviceByHost finds the Service a cluster DNS name points to: name,
// name.ns, name.ns.svc or name.ns.svc.cluster.local.
func (cl *cluster) serviceByHost(host string) (*service, error) {
	parts := strings.Split(host, ".")
	ns := cl.namespace
	if len(parts) > 1 {
		ns = parts[1]
	}
	if rest := strings.Join(parts[min(2, len(parts)):], "."); rest != "" && rest != "svc" && rest != "svc.cluster.local" {
		return nil, fmt.Errorf("%q is not a Service name (name.namespace.svc.cluster.local)", host)
	}
	if ns != cl.namespace {
		return nil, fmt.Errorf("%q is in namespace %q, not %q", host, ns, cl.namespace)
	}
	for _, s := range cl.services {
		if s.obj.Metadata.Name == parts[0] {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no Service %q", parts[0])
}

func (cl *cluster) selected(sel map[string]string) []*workload {
	var out []*workload
	if len(sel) == 0 {
		return nil
	}
	s := &labelSelector{MatchLabels: sel}
	for _, w := range cl.workloads {
		if s.matches(w.labels()) {
			out = append(out, w)
		}
	}
	return out
}

// target resolves a Service port number to the container port behind it in
// each selected workload.
func (cl *cluster) target(s *service, port int, portName string) (map[*workload]int, error) {
	for _, sp := range s.spec.Ports {
		if (portName != "" && sp.Name == portName) || (portName == "" && sp.Port == port) {
			tp := intOrString{num: sp.Port}
			if sp.TargetPort != nil {
				tp = *sp.TargetPort
			}
			out := map[*workload]int{}
			for _, w := range cl.selected(s.spec.Selector) {
				n, _, ok := w.port(tp)
				if !ok {
					return nil, fmt.Errorf("%s: targetPort %s is no container port of %s", s.obj, tp, w.obj)
				}
				out[w] = n
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%s selects no pod", s.obj)
			}
			return out, nil
		}
	}
	if portName != "" {
		return nil, fmt.Errorf("%s has no port named %q", s.obj, portName)
	}
	return nil, fmt.Errorf("%s has no port %d", s.obj, port)
}

// client is a pod that opens a connection: its namespace and labels (nil
// labels: any pod of the namespace, as for a controller we do not deploy).
type client struct {
	namespace string
	labels    map[string]string
}

// admits reports whether the NetworkPolicies let c reach port of w's pods.
func (cl *cluster) admits(w *workload, port int, c client) bool {
	selected := false
	for _, np := range cl.netpols {
		if !np.spec.PodSelector.matches(w.labels()) {
			continue
		}
		if len(np.spec.PolicyTypes) > 0 && !contains(np.spec.PolicyTypes, "Ingress") {
			continue
		}
		selected = true
		for _, rule := range np.spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, rp := range rule.Ports {
				if rp.Port == nil {
					portOK = true
				} else if n, _, ok := w.port(*rp.Port); ok && n == port {
					portOK = true
				} else if rp.Port.name == "" && rp.Port.num == port {
					portOK = true
				}
			}
			if !portOK {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil {
					continue
				}
				var nsOK bool
				if peer.NamespaceSelector == nil {
					nsOK = c.namespace == np.obj.Metadata.Namespace
				} else {
					nsOK = peer.NamespaceSelector.matches(map[string]string{"kubernetes.io/metadata.name": c.namespace})
				}
				podOK := peer.PodSelector.empty() || (c.labels != nil && peer.PodSelector.matches(c.labels))
				if nsOK && podOK {
					return true
				}
			}
		}
	}
	return !selected
}
