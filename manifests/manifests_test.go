package manifests_test

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// objects is what `kubectl kustomize .` renders, decoded strictly: an
// unknown field (a typo) fails the test instead of being dropped silently.
type objects struct {
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	services        []corev1.Service
	deployments     []appsv1.Deployment
	pdbs            []policyv1.PodDisruptionBudget
	networkPolicies []networkingv1.NetworkPolicy
	roles           []rbacv1.Role
	roleBindings    []rbacv1.RoleBinding
	// ids lists every object as kind/namespace/name, in rendering order.
	ids []string
}

// render runs kubectl kustomize on this directory and decodes the result.
// It skips the test when kubectl is not installed.
func render(t *testing.T) objects {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not on PATH; install kubectl (v1.32+, with kustomize) to check the manifests")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("kubectl", "kustomize", ".")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize .: %v\n%s", err, stderr.String())
	}
	var objs objects
	for i, doc := range splitDocuments(stdout.Bytes()) {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		objs.ids = append(objs.ids, head.Kind+"/"+head.Metadata.Namespace+"/"+head.Metadata.Name)
		var err error
		switch head.Kind {
		case "Namespace":
			objs.namespaces, err = decodeInto(doc, objs.namespaces)
		case "ServiceAccount":
			objs.serviceAccounts, err = decodeInto(doc, objs.serviceAccounts)
		case "ConfigMap":
			objs.configMaps, err = decodeInto(doc, objs.configMaps)
		case "Secret":
			objs.secrets, err = decodeInto(doc, objs.secrets)
		case "Service":
			objs.services, err = decodeInto(doc, objs.services)
		case "Deployment":
			objs.deployments, err = decodeInto(doc, objs.deployments)
		case "PodDisruptionBudget":
			objs.pdbs, err = decodeInto(doc, objs.pdbs)
		case "NetworkPolicy":
			objs.networkPolicies, err = decodeInto(doc, objs.networkPolicies)
		case "Role":
			objs.roles, err = decodeInto(doc, objs.roles)
		case "RoleBinding":
			objs.roleBindings, err = decodeInto(doc, objs.roleBindings)
		default:
			// Kept in ids, so TestObjects reports it (ClusterRole, ...).
		}
		if err != nil {
			t.Fatalf("%s %s/%s: %v", head.Kind, head.Metadata.Namespace, head.Metadata.Name, err)
		}
	}
	return objs
}

func decodeInto[T any](doc []byte, list []T) ([]T, error) {
	var v T
	if err := yaml.UnmarshalStrict(doc, &v, yaml.DisallowUnknownFields); err != nil {
		return list, err
	}
	return append(list, v), nil
}

// splitDocuments splits a multi-document YAML stream at its "---" lines.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func TestObjects(t *testing.T) {
	t.Parallel()
	objs := render(t)
	got := slices.Clone(objs.ids)
	sort.Strings(got)
	// No ClusterRole or ClusterRoleBinding: every grant is a Role in decap.
	want := []string{
		"ConfigMap/decap-system/decap-config",
		"Deployment/decap-system/decap-dispatcher",
		"Deployment/decap-system/decap-ingest",
		"Deployment/decap-system/decap-reaper",
		"Namespace//decap",
		"Namespace//decap-system",
		"NetworkPolicy/decap-system/decap-ingest",
		"NetworkPolicy/decap-system/default-deny-ingress",
		"NetworkPolicy/decap/decap-build",
		"NetworkPolicy/decap/default-deny",
		"PodDisruptionBudget/decap-system/decap-ingest",
		"Role/decap/decap-dispatcher",
		"Role/decap/decap-ingest",
		"Role/decap/decap-reaper",
		"RoleBinding/decap/decap-dispatcher",
		"RoleBinding/decap/decap-ingest",
		"RoleBinding/decap/decap-reaper",
		"Service/decap-system/decap-ingest",
		"ServiceAccount/decap-system/decap-dispatcher",
		"ServiceAccount/decap-system/decap-ingest",
		"ServiceAccount/decap-system/decap-reaper",
		"ServiceAccount/decap/decap-build",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rendered objects (-want +got):\n%s", diff)
	}
	for _, id := range objs.ids {
		if strings.HasPrefix(id, "Cluster") {
			t.Errorf("%s: cluster-wide RBAC is not allowed; use a Role in namespace decap", id)
		}
	}
}

func TestRBAC(t *testing.T) {
	t.Parallel()
	objs := render(t)
	tests := []struct {
		serviceAccount string
		want           []string // "verb resource" in namespace decap
	}{
		// Secrets: the dispatcher creates a build's, the reaper deletes
		// it; nobody reads one.
		{"decap-dispatcher", []string{"create pods", "create secrets", "delete pods", "get pods"}},
		{"decap-reaper", []string{"delete pods", "delete secrets", "get pods", "get pods/log", "list pods", "watch pods"}},
		{"decap-ingest", []string{"get pods", "get pods/log", "list pods", "watch pods"}},
		// Build Pods get no RBAC at all.
		{"decap-build", nil},
	}
	for _, tt := range tests {
		t.Run(tt.serviceAccount, func(t *testing.T) {
			t.Parallel()
			got := grants(t, objs, tt.serviceAccount)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("grants of %s (-want +got):\n%s", tt.serviceAccount, diff)
			}
		})
	}
}

// grants returns the "verb resource" pairs that RoleBindings give the
// ServiceAccount sa, sorted. Anything broader than a core-group resource in
// namespace decap, named without wildcards, fails the test.
func grants(t *testing.T, objs objects, sa string) []string {
	t.Helper()
	var got []string
	for _, rb := range objs.roleBindings {
		bound := false
		for _, s := range rb.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Name == sa {
				bound = true
			}
		}
		if !bound {
			continue
		}
		if rb.Namespace != "decap" {
			t.Errorf("RoleBinding %s/%s: want namespace decap (the build Pods' only)", rb.Namespace, rb.Name)
		}
		if rb.RoleRef.Kind != "Role" {
			t.Errorf("RoleBinding %s/%s refers to a %s; want a Role", rb.Namespace, rb.Name, rb.RoleRef.Kind)
			continue
		}
		if len(rb.Subjects) != 1 {
			t.Errorf("RoleBinding %s/%s has %d subjects; want only its service's ServiceAccount", rb.Namespace, rb.Name, len(rb.Subjects))
		}
		for _, s := range rb.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Namespace != "decap-system" {
				t.Errorf("RoleBinding %s/%s binds %s/%s; want the service's account in decap-system", rb.Namespace, rb.Name, s.Namespace, s.Name)
			}
		}
		i := slices.IndexFunc(objs.roles, func(r rbacv1.Role) bool {
			return r.Namespace == rb.Namespace && r.Name == rb.RoleRef.Name
		})
		if i < 0 {
			t.Errorf("RoleBinding %s/%s refers to Role %s, which is not rendered", rb.Namespace, rb.Name, rb.RoleRef.Name)
			continue
		}
		for _, rule := range objs.roles[i].Rules {
			if len(rule.NonResourceURLs) > 0 || len(rule.ResourceNames) > 0 {
				t.Errorf("Role %s: unexpected nonResourceURLs or resourceNames in %+v", rb.RoleRef.Name, rule)
			}
			if !slices.Equal(rule.APIGroups, []string{""}) {
				t.Errorf("Role %s: apiGroups %q; want only the core group", rb.RoleRef.Name, rule.APIGroups)
			}
			for _, v := range rule.Verbs {
				for _, r := range rule.Resources {
					if strings.Contains(v, "*") || strings.Contains(r, "*") {
						t.Errorf("Role %s: wildcard in %q %q", rb.RoleRef.Name, v, r)
					}
					got = append(got, v+" "+r)
				}
			}
		}
	}
	sort.Strings(got)
	return slices.Compact(got)
}

func TestServiceAccounts(t *testing.T) {
	t.Parallel()
	objs := render(t)
	want := map[string]bool{
		"decap-system/decap-ingest":     true,
		"decap-system/decap-dispatcher": true,
		"decap-system/decap-reaper":     true,
		"decap/decap-build":             false, // build Pods never talk to the API
	}
	got := map[string]bool{}
	for _, sa := range objs.serviceAccounts {
		if sa.AutomountServiceAccountToken == nil {
			t.Errorf("ServiceAccount %s/%s: set automountServiceAccountToken explicitly", sa.Namespace, sa.Name)
			continue
		}
		got[sa.Namespace+"/"+sa.Name] = *sa.AutomountServiceAccountToken
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("automountServiceAccountToken by ServiceAccount (-want +got):\n%s", diff)
	}
}

func TestDeployments(t *testing.T) {
	t.Parallel()
	objs := render(t)
	tests := []struct {
		name      string
		replicas  int32
		binary    string
		addrVar   string
		port      int32
		secretEnv []string // the *_FILE variables it gets
	}{
		{"decap-ingest", 2, "/usr/local/bin/ingest", "DECAP_ADDR", 8080,
			[]string{"DECAP_API_TOKEN_FILE", "DECAP_GITHUB_TOKEN_FILE", "DECAP_GITHUB_WEBHOOK_SECRET_FILE"}},
		{"decap-dispatcher", 2, "/usr/local/bin/dispatcher", "DECAP_DISPATCHER_ADDR", 8081, nil},
		{"decap-reaper", 1, "/usr/local/bin/reaper", "DECAP_REAPER_ADDR", 8082,
			[]string{"DECAP_GITHUB_TOKEN_FILE"}},
	}
	if len(objs.deployments) != len(tests) {
		t.Errorf("got %d Deployments, want %d", len(objs.deployments), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			i := slices.IndexFunc(objs.deployments, func(d appsv1.Deployment) bool { return d.Name == tt.name })
			if i < 0 {
				t.Fatalf("no Deployment %s", tt.name)
			}
			d := objs.deployments[i]
			if d.Namespace != "decap-system" {
				t.Errorf("namespace %q, want decap-system", d.Namespace)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas != tt.replicas {
				t.Errorf("replicas %v, want %d", d.Spec.Replicas, tt.replicas)
			}
			if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels) == 0 ||
				!labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("selector %v does not match the Pod template's labels %v", d.Spec.Selector, d.Spec.Template.Labels)
			}
			pod := d.Spec.Template.Spec
			checkServiceAccount(t, objs, d.Namespace, pod)
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Containers))
			}
			c := pod.Containers[0]
			if !strings.HasPrefix(c.Image, "ghcr.io/decap-ci/decap:") && !strings.HasPrefix(c.Image, "ghcr.io/decap-ci/decap@") {
				t.Errorf("image %q, want ghcr.io/decap-ci/decap", c.Image)
			}
			if len(c.Command) == 0 || c.Command[len(c.Command)-1] != tt.binary || len(c.Args) > 0 {
				t.Errorf("command %q args %q, want the command to end with %s", c.Command, c.Args, tt.binary)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					t.Errorf("env %s comes from %+v; secrets are mounted as files", e.Name, e.ValueFrom)
				}
				env[e.Name] = e.Value
			}
			if got, want := env[tt.addrVar], ":"+strconv.Itoa(int(tt.port)); got != want {
				t.Errorf("%s=%q, want %q (all interfaces, in-cluster)", tt.addrVar, got, want)
			}
			port := containerPort(t, c, tt.port)
			checkProbe(t, "liveness", c.LivenessProbe, "/healthz", port, tt.port)
			checkProbe(t, "readiness", c.ReadinessProbe, "/readyz", port, tt.port)
			checkResources(t, c.Resources)
			checkSecurity(t, pod.SecurityContext, c.SecurityContext)
			checkConfigMapRef(t, objs, c)
			mounts := mountsByPath(t, pod, c)
			if env["DECAP_DATA_DIR"] != "/var/lib/decap" {
				t.Errorf("DECAP_DATA_DIR=%q, want /var/lib/decap", env["DECAP_DATA_DIR"])
			}
			for _, dir := range []string{"/var/lib/decap", "/tmp"} {
				if v, ok := mounts[dir]; !ok || v.EmptyDir == nil {
					t.Errorf("%s: want an emptyDir mounted there (the root filesystem is read-only)", dir)
				}
			}
			var gotSecretEnv []string
			for name, path := range env {
				if !strings.HasSuffix(name, "_FILE") {
					continue
				}
				gotSecretEnv = append(gotSecretEnv, name)
				checkSecretFile(t, mounts, name, path)
			}
			sort.Strings(gotSecretEnv)
			if diff := cmp.Diff(tt.secretEnv, gotSecretEnv); diff != "" {
				t.Errorf("*_FILE variables (-want +got):\n%s", diff)
			}
		})
	}
}

func checkServiceAccount(t *testing.T, objs objects, ns string, pod corev1.PodSpec) {
	t.Helper()
	if pod.ServiceAccountName == "" {
		t.Error("no serviceAccountName")
		return
	}
	if !slices.ContainsFunc(objs.serviceAccounts, func(sa corev1.ServiceAccount) bool {
		return sa.Namespace == ns && sa.Name == pod.ServiceAccountName
	}) {
		t.Errorf("serviceAccountName %q: no such ServiceAccount in %s", pod.ServiceAccountName, ns)
	}
	if pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken false, but the services need the Kubernetes API")
	}
}

// containerPort returns the name of the container port numbered n (or the
// number itself when it has no name), so probes may refer to either.
func containerPort(t *testing.T, c corev1.Container, n int32) string {
	t.Helper()
	for _, p := range c.Ports {
		if p.ContainerPort == n {
			return p.Name
		}
	}
	t.Errorf("no container port %d", n)
	return ""
}

func checkProbe(t *testing.T, kind string, p *corev1.Probe, path, portName string, port int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want GET %s", kind, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s probe path %q, want %s", kind, p.HTTPGet.Path, path)
	}
	got := p.HTTPGet.Port
	if got.IntValue() != int(port) && (portName == "" || got.String() != portName) {
		t.Errorf("%s probe port %s, want %d", kind, got.String(), port)
	}
}

func checkResources(t *testing.T, r corev1.ResourceRequirements) {
	t.Helper()
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[name]; !ok || q.IsZero() {
			t.Errorf("no %s request", name)
		}
	}
	if q, ok := r.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
		t.Error("no memory limit")
	}
}

func checkSecurity(t *testing.T, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if c == nil {
		t.Error("no container securityContext")
		return
	}
	// A container setting wins over the Pod's.
	runAsNonRoot, runAsUser, seccomp := c.RunAsNonRoot, c.RunAsUser, c.SeccompProfile
	if pod != nil {
		if runAsNonRoot == nil {
			runAsNonRoot = pod.RunAsNonRoot
		}
		if runAsUser == nil {
			runAsUser = pod.RunAsUser
		}
		if seccomp == nil {
			seccomp = pod.SeccompProfile
		}
	}
	if runAsNonRoot == nil || !*runAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if runAsUser == nil || *runAsUser != 65532 {
		t.Errorf("runAsUser %v, want 65532", runAsUser)
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %v, want RuntimeDefault", seccomp)
	}
	if c.ReadOnlyRootFilesystem == nil || !*c.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if c.Privileged != nil && *c.Privileged {
		t.Error("privileged")
	}
	if c.Capabilities == nil || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and nothing added", c.Capabilities)
	}
}

func checkConfigMapRef(t *testing.T, objs objects, c corev1.Container) {
	t.Helper()
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil && from.ConfigMapRef.Name == "decap-config" {
			if !slices.ContainsFunc(objs.configMaps, func(cm corev1.ConfigMap) bool { return cm.Name == "decap-config" }) {
				t.Error("envFrom names ConfigMap decap-config, which is not rendered")
			}
			return
		}
	}
	t.Error("no envFrom configMapRef decap-config")
}

// mountsByPath returns the container's volumes by mount path.
func mountsByPath(t *testing.T, pod corev1.PodSpec, c corev1.Container) map[string]corev1.Volume {
	t.Helper()
	m := map[string]corev1.Volume{}
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			t.Errorf("volumeMount %s: no such volume", vm.Name)
			continue
		}
		m[vm.MountPath] = pod.Volumes[i]
	}
	return m
}

// secretKeys are the keys of the decap-secrets Secret that operators create
// (README.md, "The secret"); the manifests ship no Secret.
var secretKeys = []string{"api-token", "github-token", "github-webhook-secret"}

// checkSecretFile checks that the file a *_FILE variable names is one of
// secretKeys of the decap-secrets Secret, mounted where the variable points.
func checkSecretFile(t *testing.T, mounts map[string]corev1.Volume, name, value string) {
	t.Helper()
	dir, file := path.Split(value)
	dir = strings.TrimSuffix(dir, "/")
	v, ok := mounts[dir]
	if !ok || v.Secret == nil {
		t.Errorf("%s=%s: no Secret volume mounted at %s", name, value, dir)
		return
	}
	if v.Secret.SecretName != "decap-secrets" {
		t.Errorf("%s: volume %s names Secret %q, want decap-secrets", name, v.Name, v.Secret.SecretName)
	}
	key := file
	if len(v.Secret.Items) > 0 {
		j := slices.IndexFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == file })
		if j < 0 {
			t.Errorf("%s=%s: the Secret volume has no item with path %s", name, value, file)
			return
		}
		key = v.Secret.Items[j].Key
	}
	if !slices.Contains(secretKeys, key) {
		t.Errorf("%s=%s: key %s is not one README.md tells operators to create (%v)", name, value, key, secretKeys)
	}
}

// TestNoSecretShipped checks that applying the manifests deploys no secret
// (issue 12: the example Secret's REPLACE-ME became the services' token): no
// Secret is rendered, no file here is one, and the README shows how to make
// each key from random bytes.
func TestNoSecretShipped(t *testing.T) {
	t.Parallel()
	objs := render(t)
	for _, s := range objs.secrets {
		t.Errorf("Secret %s/%s is rendered; operators create decap-secrets themselves", s.Namespace, s.Name)
	}
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	kindSecret := regexp.MustCompile(`(?m)^kind:\s*Secret\s*$`)
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".yaml") && !strings.HasSuffix(f.Name(), ".yml") {
			continue
		}
		data, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if kindSecret.Match(data) {
			t.Errorf("%s holds a Secret: `kubectl apply -f manifests/` would deploy it", f.Name())
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"api-token", "github-webhook-secret"} {
		if !strings.Contains(string(readme), "--from-literal="+key+"=\"$(openssl rand -hex 32)\"") {
			t.Errorf("README.md does not show how to create %s from random bytes", key)
		}
	}
}

func TestNamespaces(t *testing.T) {
	t.Parallel()
	objs := render(t)
	var got []string
	for _, ns := range objs.namespaces {
		got = append(got, ns.Name)
	}
	sort.Strings(got)
	if diff := cmp.Diff([]string{"decap", "decap-system"}, got); diff != "" {
		t.Errorf("namespaces (-want +got):\n%s", diff)
	}
	for _, id := range objs.ids {
		kind, rest, _ := strings.Cut(id, "/")
		ns, _, _ := strings.Cut(rest, "/")
		if kind != "Namespace" && !slices.Contains(got, ns) {
			t.Errorf("%s: namespace %q is not one of the rendered ones", id, ns)
		}
	}
}

// TestSettingsExist checks every DECAP_* variable the manifests set against
// the names internal/config reads, so a misspelt or renamed setting is not
// silently ignored.
func TestSettingsExist(t *testing.T) {
	t.Parallel()
	objs := render(t)
	src, err := os.ReadFile("../internal/config/config.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cm := range objs.configMaps {
		for k := range cm.Data {
			names = append(names, k)
		}
	}
	for _, d := range objs.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				names = append(names, e.Name)
			}
		}
	}
	for _, name := range names {
		if !strings.HasPrefix(name, "DECAP_") {
			continue // AWS_REGION and the like belong to the AWS SDK
		}
		if !bytes.Contains(src, []byte(`"`+strings.TrimSuffix(name, "_FILE")+`"`)) {
			t.Errorf("%s is not a setting internal/config reads", name)
		}
	}
	want := map[string]string{
		"DECAP_BACKEND":        "aws",
		"DECAP_EXECUTOR":       "kubernetes",
		"DECAP_KUBE_NAMESPACE": "decap", // where decap-build and the Roles live
	}
	i := slices.IndexFunc(objs.configMaps, func(cm corev1.ConfigMap) bool { return cm.Name == "decap-config" })
	if i < 0 {
		t.Fatal("no ConfigMap decap-config")
	}
	for k, v := range want {
		if got := objs.configMaps[i].Data[k]; got != v {
			t.Errorf("decap-config %s=%q, want %q", k, got, v)
		}
	}
}

func TestIngestService(t *testing.T) {
	t.Parallel()
	objs := render(t)
	si := slices.IndexFunc(objs.services, func(s corev1.Service) bool { return s.Name == "decap-ingest" })
	di := slices.IndexFunc(objs.deployments, func(d appsv1.Deployment) bool { return d.Name == "decap-ingest" })
	if si < 0 || di < 0 {
		t.Fatalf("want Service and Deployment decap-ingest (service %d, deployment %d)", si, di)
	}
	svc, d := objs.services[si], objs.deployments[di]
	if svc.Spec.Type != "" && svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("Service type %s, want ClusterIP", svc.Spec.Type)
	}
	pod := labels.Set(d.Spec.Template.Labels)
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(pod) {
		t.Errorf("Service selector %v does not match ingest Pods %v", svc.Spec.Selector, pod)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service has %d ports, want 1", len(svc.Spec.Ports))
	}
	p := svc.Spec.Ports[0]
	name := containerPort(t, d.Spec.Template.Spec.Containers[0], 8080)
	if p.Port != 80 || (p.TargetPort.IntValue() != 8080 && (name == "" || p.TargetPort.String() != name)) {
		t.Errorf("Service port %d -> %s, want 80 -> 8080", p.Port, p.TargetPort.String())
	}
	for _, pdb := range objs.pdbs {
		if pdb.Spec.Selector == nil || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(pod) {
			t.Errorf("PodDisruptionBudget %s selects no ingest Pod", pdb.Name)
		}
	}
}
