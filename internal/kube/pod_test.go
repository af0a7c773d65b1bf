package kube_test

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/kube"
)

var update = flag.Bool("update", false, "rewrite testdata/pods/*.yaml from PodFor")

// hostileRef is a branch git accepts that no label value can hold: too
// long, a slash, non-ASCII letters.
const hostileRef = "feature/ÜBER_sehr-lange.Verzweigung/mit/vielen/Teilen/und-noch-mehr-Text-damit-es-über-hundert-Zeichen-sind"

// podJobs are the jobs of the golden Pods, by golden file name.
func podJobs() map[string]build.Job {
	push := testJob(testID(1))

	tag := testJob(testID(2))
	tag.Request.Ref, tag.Request.RefType, tag.Request.SHA = "v1.2.0", build.Tag, ""
	tag.Request.Trigger, tag.Request.DeliveryID = build.TriggerManual, ""
	tag.Descriptor.Sidecars = []build.Sidecar{
		{Name: "postgres", Image: "postgres:17", Env: []build.EnvVar{{Name: "POSTGRES_PASSWORD", Value: "postgres"}, {Name: "POSTGRES_DB", Value: "test"}}},
		{Name: "redis", Image: "redis:7", Command: []string{"redis-server"}, Args: []string{"--save", ""}},
	}

	hostile := testJob(testID(3))
	hostile.Request.Ref = hostileRef
	hostile.Request.Project = "my.project_"

	timeout := testJob(testID(4))
	timeout.Descriptor.TimeoutSeconds = 7200

	pull := testJob(testID(5))
	pull.Request.Ref, pull.Request.RefType, pull.Request.Trigger = "pull/7", build.Pull, build.TriggerPullRequest
	pull.Request.PullRequest = &build.PullRequest{Number: 7, BaseRef: "main", HeadRef: "feature/x", HeadRepo: "octocat/" + pull.Request.Project,
		HeadSHA: pull.Request.SHA, ApprovedBy: "ae6rt"}

	return map[string]build.Job{"branch-push": push, "tag-sidecars": tag, "hostile-branch": hostile, "timeout": timeout, "pull-request-fork": pull}
}

func TestPodForGolden(t *testing.T) {
	t.Parallel()
	for name, job := range podJobs() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := build.ValidateRef(job.Request.Ref); err != nil {
				t.Fatalf("the test's ref: %v", err)
			}
			got, err := yaml.Marshal(kube.PodFor(job, testSpec()))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "pods", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/kube/ -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("PodFor differs from %s (-want +got; -update rewrites it):\n%s", path, cmp.Diff(string(want), string(got)))
			}
		})
	}
}

// allContainers returns the init containers (checkout, sidecars) and the
// containers of p.
func allContainers(p *corev1.Pod) []corev1.Container {
	return append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...)
}

func TestPodForProperties(t *testing.T) {
	t.Parallel()
	jobs := podJobs()
	// A job's own timeout wins over the descriptor's.
	short := jobs["timeout"]
	short.Timeout = 30 * time.Minute
	jobs["job-timeout"] = short
	// The longest sidecar name the descriptor accepts.
	long := jobs["tag-sidecars"]
	long.Descriptor.Sidecars = []build.Sidecar{{Name: strings.Repeat("s", 63), Image: "busybox:1"}}
	jobs["long-sidecar-name"] = long
	wantTimeout := map[string]time.Duration{"job-timeout": 30 * time.Minute, "timeout": 2 * time.Hour}

	spec := testSpec()
	for name, job := range jobs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			req := job.Request
			p := kube.PodFor(job, spec)

			if errs := validation.IsDNS1123Subdomain(p.Name); p.Name != req.BuildID.PodName() || len(errs) > 0 {
				t.Errorf("name = %q (%v), want %q, a valid Pod name", p.Name, errs, req.BuildID.PodName())
			}
			if p.Namespace != ns {
				t.Errorf("namespace = %q, want %q", p.Namespace, ns)
			}
			if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("restartPolicy = %q, want Never", p.Spec.RestartPolicy)
			}
			timeout, ok := wantTimeout[name]
			if !ok {
				timeout = build.DefaultBuildTimeout
			}
			if d := p.Spec.ActiveDeadlineSeconds; d == nil || time.Duration(*d)*time.Second != timeout+build.UploadGrace {
				t.Errorf("activeDeadlineSeconds = %v, want %v", d, int64((timeout+build.UploadGrace)/time.Second))
			}

			wantLabels := map[string]string{
				kube.LabelType: kube.TypeBuild, kube.LabelTeam: req.Team, kube.LabelProject: req.Project, kube.LabelBranch: req.Ref,
			}
			for k, full := range wantLabels {
				v, ok := p.Labels[k]
				if !ok {
					t.Errorf("no label %s", k)
					continue
				}
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
					t.Errorf("label %s=%q is not a label value: %v", k, v, errs)
				}
				if validation.IsValidLabelValue(full) == nil && v != full {
					t.Errorf("label %s = %q, want %q unchanged", k, v, full)
				}
			}
			wantAnnotations := map[string]string{
				kube.AnnotationBuildID: string(req.BuildID), kube.AnnotationTeam: req.Team, kube.AnnotationProject: req.Project,
				kube.AnnotationRef: req.Ref, kube.AnnotationRefType: string(req.RefType), kube.AnnotationTrigger: string(req.Trigger),
				kube.AnnotationCatalogCommit: job.CatalogCommit,
			}
			if req.SHA != "" {
				wantAnnotations[kube.AnnotationSHA] = req.SHA
			}
			if diff := cmp.Diff(wantAnnotations, p.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}

			for _, v := range p.Spec.Volumes {
				if v.GitRepo != nil || v.HostPath != nil || v.Secret != nil || v.Projected != nil || v.EmptyDir == nil {
					t.Errorf("volume %s is not an emptyDir: %+v", v.Name, v.VolumeSource)
				}
			}
			psc := p.Spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("pod securityContext.runAsNonRoot is not true: %+v", psc)
			}
			if a := p.Spec.AutomountServiceAccountToken; a == nil || *a {
				t.Errorf("automountServiceAccountToken = %v, want false", a)
			}
			if p.Spec.ServiceAccountName != spec.ServiceAccount {
				t.Errorf("serviceAccountName = %q, want %q", p.Spec.ServiceAccountName, spec.ServiceAccount)
			}
			if p.Spec.HostNetwork || p.Spec.HostPID || p.Spec.HostIPC {
				t.Error("the Pod shares a host namespace")
			}

			names := map[string]bool{}
			var build0 *corev1.Container
			for _, c := range allContainers(p) {
				if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
					t.Errorf("container name %q is invalid: %v", c.Name, errs)
				}
				if names[c.Name] {
					t.Errorf("container name %q is repeated", c.Name)
				}
				names[c.Name] = true
				if c.Name == kube.ContainerBuild {
					build0 = &c
				}
				if sc := c.SecurityContext; sc == nil {
					t.Errorf("container %s has no securityContext", c.Name)
				} else {
					if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
						t.Errorf("container %s may run as root", c.Name)
					}
					if sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("container %s may be privileged or escalate", c.Name)
					}
				}
				if len(c.EnvFrom) > 0 {
					t.Errorf("container %s takes its environment from %+v", c.Name, c.EnvFrom)
				}
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "AWS_") {
						t.Errorf("container %s has %s", c.Name, e.Name)
					}
					if e.ValueFrom != nil {
						t.Errorf("container %s takes %s from %+v", c.Name, e.Name, e.ValueFrom)
					}
					if errs := validation.IsEnvVarName(e.Name); len(errs) > 0 {
						t.Errorf("container %s: env name %q: %v", c.Name, e.Name, errs)
					}
					if c.Name != kube.ContainerBuild && (strings.Contains(e.Value, spec.LogUploadURL) || strings.Contains(e.Value, spec.ArtifactsUploadURL) || strings.Contains(e.Value, spec.LogTimesUploadURL)) {
						t.Errorf("container %s holds an upload URL in %s", c.Name, e.Name)
					}
				}
			}
			if want := 2 + len(job.Descriptor.Sidecars); len(names) != want {
				t.Errorf("%d containers, want %d", len(names), want)
			}
			if build0 == nil {
				t.Fatalf("no container %s", kube.ContainerBuild)
			}
			env := map[string]string{}
			for _, e := range build0.Env {
				env[e.Name] = e.Value
			}
			for k, want := range map[string]string{
				"BUILD_ID": string(req.BuildID), "BRANCH_TO_BUILD": req.Ref, "PROJECT_KEY": req.ProjectKey(),
				"DECAP_LOG_UPLOAD_URL": spec.LogUploadURL, "DECAP_ARTIFACTS_UPLOAD_URL": spec.ArtifactsUploadURL,
				"DECAP_LOG_TIMES_UPLOAD_URL": spec.LogTimesUploadURL,
				"DECAP_BUILD_TIMEOUT":        timeout.String(),
			} {
				if env[k] != want {
					t.Errorf("build container %s = %q, want %q", k, env[k], want)
				}
			}
			if sha, ok := env["COMMIT_SHA"]; sha != req.SHA || ok != (req.SHA != "") {
				t.Errorf("build container COMMIT_SHA = %q (set: %v), want %q", sha, ok, req.SHA)
			}
			if build0.Image != job.Descriptor.BuildImage {
				t.Errorf("build image = %q, want %q", build0.Image, job.Descriptor.BuildImage)
			}
			if build0.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
				t.Errorf("build terminationMessagePolicy = %q, want FallbackToLogsOnError (the watcher reads the result there)", build0.TerminationMessagePolicy)
			}
		})
	}
}

func TestPodForDeterministic(t *testing.T) {
	t.Parallel()
	for name, job := range podJobs() {
		a, b := kube.PodFor(job, testSpec()), kube.PodFor(job, testSpec())
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%s: two PodFor of one job differ (-first +second):\n%s", name, diff)
		}
		ya, _ := yaml.Marshal(a)
		yb, _ := yaml.Marshal(b)
		if !bytes.Equal(ya, yb) {
			t.Errorf("%s: two PodFor of one job render differently", name)
		}
	}
}

func TestLabelValue(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 63)
	tests := []struct {
		name, in string
		// want is the exact result, or "" to check only validity and
		// wantPrefix.
		want, wantPrefix string
	}{
		{name: "plain", in: "main", want: "main"},
		{name: "empty", in: "", want: ""},
		{name: "all allowed characters", in: "Release-1.2_x", want: "Release-1.2_x"},
		{name: "63 characters", in: long, want: long},
		{name: "64 characters", in: long + "b", wantPrefix: strings.Repeat("a", 50)},
		{name: "slash", in: "feature/x", wantPrefix: "feature-x-"},
		{name: "space", in: "feature/ÜBER very-long", wantPrefix: "feature--BER-very-long-"},
		{name: "leading dash", in: "-x", wantPrefix: "x-"},
		{name: "trailing dot", in: "v1.", wantPrefix: "v1-"},
		{name: "trailing underscore", in: "my.project_", wantPrefix: "my.project-"},
		{name: "nothing allowed", in: "ÜÜÜ", wantPrefix: ""},
		{name: "only punctuation", in: "-._", wantPrefix: ""},
		{name: "invalid UTF-8", in: "a\xffb", wantPrefix: "a-b-"},
		{name: "hostile branch", in: hostileRef, wantPrefix: "feature--BER_sehr-lange.Verzweigung-mit-vielen-Teilen"},
		{name: "long, punctuation at the cut", in: strings.Repeat("a", 54) + strings.Repeat("-", 20) + "x", wantPrefix: strings.Repeat("a", 54) + "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := kube.LabelValue(tt.in)
			if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
				t.Fatalf("LabelValue(%q) = %q, not a label value: %v", tt.in, got, errs)
			}
			if tt.want != "" || tt.in == "" {
				if got != tt.want {
					t.Errorf("LabelValue(%q) = %q, want %q", tt.in, got, tt.want)
				}
				return
			}
			if got == tt.in {
				t.Errorf("LabelValue(%q) = %q unchanged, want it sanitised", tt.in, got)
			}
			if !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("LabelValue(%q) = %q, want it to start with %q", tt.in, got, tt.wantPrefix)
			}
			if again := kube.LabelValue(got); again != got {
				t.Errorf("LabelValue(LabelValue(%q)) = %q, want %q unchanged", tt.in, again, got)
			}
		})
	}
}

// TestLabelValueDistinct checks that values that must be sanitised keep
// apart: near misses that differ only where the sanitising erases the
// difference, and many random strings (from a fixed seed).
func TestLabelValueDistinct(t *testing.T) {
	t.Parallel()
	prefix := strings.Repeat("p", 70)
	inputs := []string{
		"feature/x", "feature:x", "feature x", "feature-x", "feature~x", "featureÜx", "feature/y",
		"v1.", "v1_", "v1-", "v1",
		prefix, prefix + "a", prefix + "b", prefix + "/", prefix + "aa", "p" + prefix,
		"ÜÜ", "ÄÄ", "Ü", "Ä", "/", "//", "-", "_", ".",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("abcXYZ019-._/ Ü~:@")
	for range 20000 {
		r := make([]rune, rng.IntN(120))
		for i := range r {
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(r))
	}

	from := map[string]string{}
	for _, in := range inputs {
		got := kube.LabelValue(in)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Fatalf("LabelValue(%q) = %q, not a label value: %v", in, got, errs)
		}
		if (got == in) != (len(validation.IsValidLabelValue(in)) == 0) {
			t.Errorf("LabelValue(%q) = %q: a valid value must stay, an invalid one must change", in, got)
		}
		if other, ok := from[got]; ok && other != in {
			t.Errorf("LabelValue(%q) = LabelValue(%q) = %q", in, other, got)
		}
		from[got] = in
	}
}

func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"", "main", "feature/x", hostileRef, strings.Repeat("x", 200), "-a-", "\xff", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := kube.LabelValue(in)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Fatalf("LabelValue(%q) = %q, not a label value: %v", in, got, errs)
		}
		if valid := len(validation.IsValidLabelValue(in)) == 0; valid != (got == in) {
			t.Fatalf("LabelValue(%q) = %q; valid input: %v", in, got, valid)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("LabelValue(%q) = %q is not UTF-8", in, got)
		}
	})
}
