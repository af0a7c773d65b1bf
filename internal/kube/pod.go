// Package kube is the kubernetes executor: each build runs once in a build
// Pod in the build namespace. PodFor makes the Pod, Executor creates and
// deletes it, and Watch follows build Pods on a shared informer to tell the
// reaper how each build ended.
package kube

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/decap-ci/decap/internal/build"
)

// Labels every build Pod carries. Label values are sanitised (see
// LabelValue); the full values are in the annotations.
const (
	LabelType    = "type"
	LabelTeam    = "team"
	LabelProject = "project"
	LabelBranch  = "branch"
	// TypeBuild is the value of LabelType on build Pods: the watcher's and
	// the executor's label selector.
	TypeBuild = "decap-build"
)

// Annotations of a build Pod: the request's full values, which the watcher
// reads back into the build's Outcome.
const (
	AnnotationBuildID       = "decap.io/build-id"
	AnnotationTeam          = "decap.io/team"
	AnnotationProject       = "decap.io/project"
	AnnotationRef           = "decap.io/ref"
	AnnotationRefType       = "decap.io/ref-type"
	AnnotationSHA           = "decap.io/sha"
	AnnotationTrigger       = "decap.io/trigger"
	AnnotationCatalogCommit = "decap.io/catalog-commit"
)

// Container and volume names, and where the volumes are mounted.
const (
	ContainerCheckout = "checkout"
	ContainerBuild    = "build"

	ScriptsMount   = "/build-scripts"
	ArtifactsMount = "/build-artifacts"
	WorkspaceMount = "/workspace"
	ToolsMount     = "/decap/bin"

	volScripts   = "build-scripts"
	volArtifacts = "build-artifacts"
	volWorkspace = "workspace"
	volTools     = "decap-bin"
	volTmp       = "tmp"
	volSecrets   = "build-secrets"
)

// SecretsMount is where the build container finds its secrets, one
// read-only file per name (build.SecretsDir).
const SecretsMount = build.SecretsDir

// BuildUID is the uid and gid build containers run as (the build
// container image's user decap).
const BuildUID = 1000

// checkoutScript is the init container's program: check the build-scripts
// repository out at the catalog commit into the shared volume, then copy
// decap-entrypoint where the build container (any buildImage) finds it.
// The repository and commit come from the environment, never from the
// script's text. A shallow fetch of one commit works on GitHub and most
// servers; a full clone is the fallback.
const checkoutScript = `set -euo pipefail
cd "$DECAP_SCRIPTS_DIR"
git init -q .
git remote add origin "$DECAP_SCRIPTS_REPO"
if ! git fetch -q --depth 1 origin "$DECAP_SCRIPTS_COMMIT"; then
  echo "shallow fetch of $DECAP_SCRIPTS_COMMIT refused; fetching the whole repository" >&2
  git fetch -q origin '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'
fi
git -c advice.detachedHead=false checkout -q --detach "$DECAP_SCRIPTS_COMMIT"
echo "build scripts at $(git rev-parse HEAD)"
cp /usr/local/bin/decap-entrypoint "$DECAP_TOOLS_DIR/decap-entrypoint"
`

// PodSpec is what PodFor needs beyond the job: where the Pod goes and the
// cluster-wide settings of build Pods.
type PodSpec struct {
	Namespace string
	// EntrypointImage is the Decap build container image, which holds git
	// and decap-entrypoint (build-container/).
	EntrypointImage string
	// ScriptsRepo is the build-scripts repository's git URL.
	ScriptsRepo string
	// ServiceAccount runs the Pod; it should have no RBAC and no mounted
	// token (manifests/: decap-build).
	ServiceAccount string
	// LogUploadURL and ArtifactsUploadURL are presigned PUT URLs for exactly
	// the build's two objects: the only grant the Pod holds.
	LogUploadURL, ArtifactsUploadURL string
	// LogTimesUploadURL, if set, is the presigned PUT URL of the log's
	// line-time index (build.LogTimesKey), the build's third object.
	LogTimesUploadURL string
	// Requests and limits of the build container.
	CPURequest, MemoryRequest, MemoryLimit resource.Quantity
}

// PodFor returns the build Pod of job. It is a pure function of its
// arguments: the same job and spec give the same Pod, which makes a
// repeated create of one build collide on its name (AlreadyExists).
func PodFor(job build.Job, spec PodSpec) *corev1.Pod {
	req := job.Request
	timeout := job.BuildTimeout()
	// build.UploadGrace past the build's own deadline: time for
	// decap-entrypoint to stop the script, record timed_out and upload the
	// log and artifacts before activeDeadlineSeconds ends the Pod.
	deadline := int64((timeout + build.UploadGrace) / time.Second)
	grace := int64(60) // SIGTERM → uploads of what there is
	uid, nonRoot, noEscalation, readOnly := int64(BuildUID), true, false, true
	noToken, noLinks := false, false

	emptyDir := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	}
	restricted := func() *corev1.SecurityContext {
		return &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             &nonRoot,
			AllowPrivilegeEscalation: &noEscalation,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	}
	checkoutSC := restricted()
	checkoutSC.ReadOnlyRootFilesystem = &readOnly

	always := corev1.ContainerRestartPolicyAlways
	inits := []corev1.Container{{
		Name:    ContainerCheckout,
		Image:   spec.EntrypointImage,
		Command: []string{"/bin/bash", "-c", checkoutScript},
		Env: []corev1.EnvVar{
			{Name: "DECAP_SCRIPTS_REPO", Value: spec.ScriptsRepo},
			{Name: "DECAP_SCRIPTS_COMMIT", Value: job.CatalogCommit},
			{Name: "DECAP_SCRIPTS_DIR", Value: ScriptsMount},
			{Name: "DECAP_TOOLS_DIR", Value: ToolsMount},
			{Name: "HOME", Value: "/tmp"},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: volScripts, MountPath: ScriptsMount},
			{Name: volTools, MountPath: ToolsMount},
			{Name: volTmp, MountPath: "/tmp"},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		SecurityContext:          checkoutSC,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}}
	// Sidecars are native sidecars (init containers that keep running):
	// they start before the build and stop when it ends, so they never
	// keep a finished build's Pod alive. A sidecar's container is named as
	// the descriptor names it: a DNS label of up to 63 characters other than
	// build and checkout (a prefix could make it too long).
	for _, sc := range job.Descriptor.Sidecars {
		c := corev1.Container{
			Name:          sc.Name,
			Image:         sc.Image,
			Command:       slices.Clone(sc.Command),
			Args:          slices.Clone(sc.Args),
			RestartPolicy: &always,
			SecurityContext: &corev1.SecurityContext{
				RunAsNonRoot:             &nonRoot,
				AllowPrivilegeEscalation: &noEscalation,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}
		for _, e := range sc.Env {
			c.Env = append(c.Env, corev1.EnvVar{Name: e.Name, Value: e.Value})
		}
		inits = append(inits, c)
	}

	buildEnv := []corev1.EnvVar{
		{Name: "BUILD_ID", Value: string(req.BuildID)},
		{Name: "PROJECT_KEY", Value: req.ProjectKey()},
		{Name: "BRANCH_TO_BUILD", Value: req.Ref},
	}
	if req.SHA != "" {
		buildEnv = append(buildEnv, corev1.EnvVar{Name: "COMMIT_SHA", Value: req.SHA})
	}
	if p := req.PullRequest; p != nil {
		// The entrypoint reads them back (build.PullRequestFromEnv) and
		// hands them to the script.
		for _, v := range p.Env() {
			buildEnv = append(buildEnv, corev1.EnvVar{Name: v.Name, Value: v.Value})
		}
	}
	buildEnv = append(buildEnv,
		corev1.EnvVar{Name: "DECAP_BUILD_TIMEOUT", Value: timeout.String()},
		corev1.EnvVar{Name: "DECAP_SCRIPTS_DIR", Value: ScriptsMount},
		corev1.EnvVar{Name: "DECAP_ARTIFACTS_DIR", Value: ArtifactsMount},
		corev1.EnvVar{Name: "DECAP_WORKSPACE", Value: WorkspaceMount},
		corev1.EnvVar{Name: "DECAP_LOG_UPLOAD_URL", Value: spec.LogUploadURL},
		corev1.EnvVar{Name: "DECAP_ARTIFACTS_UPLOAD_URL", Value: spec.ArtifactsUploadURL},
		corev1.EnvVar{Name: "HOME", Value: WorkspaceMount},
	)
	if spec.LogTimesUploadURL != "" {
		buildEnv = append(buildEnv, corev1.EnvVar{Name: "DECAP_LOG_TIMES_UPLOAD_URL", Value: spec.LogTimesUploadURL})
	}
	buildMounts := []corev1.VolumeMount{
		{Name: volScripts, MountPath: ScriptsMount, ReadOnly: true},
		{Name: volTools, MountPath: ToolsMount, ReadOnly: true},
		{Name: volWorkspace, MountPath: WorkspaceMount},
		{Name: volArtifacts, MountPath: ArtifactsMount},
	}
	volumes := []corev1.Volume{
		emptyDir(volScripts), emptyDir(volTools), emptyDir(volWorkspace), emptyDir(volArtifacts), emptyDir(volTmp),
	}
	if len(job.Secrets) > 0 {
		// The values live in the build's own Secret (SecretFor), never
		// here: the Pod names it, the kubelet mounts it, only the build
		// container sees it (not the sidecars, not the checkout).
		buildEnv = append(buildEnv, corev1.EnvVar{Name: "DECAP_SECRETS_DIR", Value: SecretsMount})
		buildMounts = append(buildMounts, corev1.VolumeMount{Name: volSecrets, MountPath: SecretsMount, ReadOnly: true})
		mode, optional := int32(0o440), false // group: the Pod's fsGroup, the build's own
		volumes = append(volumes, corev1.Volume{Name: volSecrets, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: SecretName(req.BuildID), DefaultMode: &mode, Optional: &optional,
		}}})
	}

	labels := map[string]string{
		LabelType:    TypeBuild,
		LabelTeam:    LabelValue(req.Team),
		LabelProject: LabelValue(req.Project),
		LabelBranch:  LabelValue(req.Ref),
	}
	annotations := map[string]string{
		AnnotationBuildID:       string(req.BuildID),
		AnnotationTeam:          req.Team,
		AnnotationProject:       req.Project,
		AnnotationRef:           req.Ref,
		AnnotationRefType:       string(req.RefType),
		AnnotationTrigger:       string(req.Trigger),
		AnnotationCatalogCommit: job.CatalogCommit,
	}
	if req.SHA != "" {
		annotations[AnnotationSHA] = req.SHA
	}

	fsGroup := uid
	seccomp := corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        req.BuildID.PodName(),
			Namespace:   spec.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			TerminationGracePeriodSeconds: &grace,
			ServiceAccountName:            spec.ServiceAccount,
			AutomountServiceAccountToken:  &noToken,
			EnableServiceLinks:            &noLinks,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &nonRoot,
				FSGroup:        &fsGroup,
				SeccompProfile: &seccomp,
			},
			InitContainers: inits,
			Containers: []corev1.Container{{
				Name:         ContainerBuild,
				Image:        job.Descriptor.BuildImage,
				Command:      []string{ToolsMount + "/decap-entrypoint"},
				WorkingDir:   WorkspaceMount,
				Env:          buildEnv,
				VolumeMounts: buildMounts,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: spec.CPURequest, corev1.ResourceMemory: spec.MemoryRequest},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: spec.MemoryLimit},
				},
				SecurityContext: restricted(),
				// decap-entrypoint writes its result (JSON) here; when it
				// could not even start, the log's tail is the message.
				TerminationMessagePath:   corev1.TerminationMessagePathDefault,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: volumes,
		},
	}
}

// TypeBuildSecrets is the value of LabelType on the Secrets of builds.
const TypeBuildSecrets = "decap-build-secrets"

// SecretName is the name of the Secret that holds a build's secrets: its
// Pod's name and "-secrets".
func SecretName(id build.ID) string { return id.PodName() + "-secrets" }

// SecretFor returns the Secret that carries job's secrets to its Pod, owned
// by the Pod (so the garbage collector deletes it with the Pod; the reaper
// deletes it too, see Executor.Remove), immutable, one key per name. The
// Pod's spec holds only its name. Like PodFor it is a pure function.
func SecretFor(job build.Job, pod *corev1.Pod) *corev1.Secret {
	immutable := true
	data := make(map[string][]byte, len(job.Secrets))
	for _, s := range job.Secrets {
		data[s.Name] = s.Value
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        SecretName(job.Request.BuildID),
			Namespace:   pod.Namespace,
			Labels:      map[string]string{LabelType: TypeBuildSecrets},
			Annotations: map[string]string{AnnotationBuildID: string(job.Request.BuildID)},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			}},
		},
		Immutable: &immutable,
		Type:      corev1.SecretTypeOpaque,
		Data:      data,
	}
}

// LabelValue makes v a valid label value: at most 63 characters of
// [A-Za-z0-9._-], starting and ending with a letter or digit. Other
// characters become '-'; a value that had to change gets a short hash of
// the original appended, so that distinct branches keep distinct labels.
func LabelValue(v string) string {
	var b strings.Builder
	for _, r := range v {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String()
	if s == v && len(s) <= 63 && validEnds(s) {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(v))
	sum := strconv.FormatUint(uint64(h.Sum32()), 36)
	s = strings.Trim(s, "-._")
	if len(s) > 63-len(sum)-1 {
		s = strings.TrimRight(s[:63-len(sum)-1], "-._")
	}
	if s == "" {
		return sum
	}
	return s + "-" + sum
}

func validEnds(s string) bool {
	if s == "" {
		return true
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	return alnum(s[0]) && alnum(s[len(s)-1])
}

// podBuildID returns the build ID of a build Pod, from its annotation or,
// failing that, its name.
func podBuildID(p *corev1.Pod) (build.ID, error) {
	if id := p.Annotations[AnnotationBuildID]; id != "" {
		return build.ID(id), nil
	}
	if id, ok := strings.CutPrefix(p.Name, "build-"); ok && id != "" {
		return build.ID(id), nil
	}
	return "", fmt.Errorf("pod %s/%s is not a build pod", p.Namespace, p.Name)
}
