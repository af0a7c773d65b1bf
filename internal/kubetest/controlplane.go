// Package kubetest starts a real Kubernetes control plane on loopback for
// tests: etcd, kube-apiserver (RBAC on), kube-scheduler and kwok, whose
// fake node takes build Pods through Pending, Running and Succeeded or
// Failed. The binaries come from scripts/kube-controlplane.sh build; a test
// is skipped, saying how to get them, when they are not there.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/decap-ci/decap/internal/proctest"
)

// Version is the Kubernetes version scripts/kube-controlplane.sh builds.
const Version = "v1.37.2"

// Binaries the control plane needs.
var Binaries = []string{"etcd", "kube-apiserver", "kube-scheduler", "kwok"}

// NodeName is the fake node kwok runs Pods on.
const NodeName = "kwok-node-0"

// Branch names that tell the kwok stages how a build Pod ends: its "branch"
// label. Any other branch succeeds at once.
const (
	// BranchFail ends Failed, the build container exiting with FailExitCode.
	BranchFail = "fail"
	// BranchHold keeps running until deleted.
	BranchHold = "hold"
	// FailExitCode is the exit code of BranchFail's build container.
	FailExitCode = 3
)

//go:embed stages.yaml
var stages []byte

const adminToken = "decap-kubetest-admin"

// BinDir is where scripts/kube-controlplane.sh keeps the binaries:
// $DECAP_KUBE_BIN, or under the user's cache directory.
func BinDir() string {
	if d := os.Getenv("DECAP_KUBE_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "decap", "kube-controlplane-"+Version)
}

// Missing returns why the control plane cannot start here, or "".
func Missing() string {
	dir := BinDir()
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Sprintf("the Kubernetes control plane (%s) is not built in %s: run scripts/kube-controlplane.sh build (11-25 minutes once; .ci/run does it)", strings.Join(Binaries, ", "), dir)
		}
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		return "kubectl is not on PATH"
	}
	return ""
}

// ControlPlane is a running control plane. What Start started stops when
// the test ends; what Run started stops on Stop.
type ControlPlane struct {
	// Dir holds its state, logs and kubeconfigs.
	Dir string
	// Kubeconfig is the admin's kubeconfig (group system:masters).
	Kubeconfig string
	// Config and Client are the admin's.
	Config *rest.Config
	Client kubernetes.Interface

	t      testing.TB // nil when Run started it
	server string
	ca     []byte
	procs  []*proc
}

// proc is one process of the control plane; exited is closed once it has
// exited and been waited for (cmd.ProcessState is set then).
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts a control plane in a temporary directory of t, or skips t
// when Missing says why not. It returns once the API server answers, and
// kwok's node is Ready.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	if why := Missing(); why != "" {
		t.Skip(why)
	}
	cp, err := Run(t.TempDir())
	if cp != nil {
		cp.t = t
		t.Cleanup(func() {
			cp.Stop()
			if t.Failed() {
				t.Log(cp.LogTails())
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// Run starts a control plane in dir, for a program that is not a test
// (bench). It returns once the API server answers, and kwok's node is
// Ready. The caller stops it with Stop, also after an error, when the
// ControlPlane is not nil (LogTails then says what went wrong); Missing
// says beforehand whether the binaries are there.
func Run(dir string) (*ControlPlane, error) {
	if why := Missing(); why != "" {
		return nil, errors.New(why)
	}
	cp := &ControlPlane{Dir: dir}
	if err := cp.run(); err != nil {
		return cp, err
	}
	return cp, nil
}

func (cp *ControlPlane) run() error {
	dir, bin := cp.Dir, BinDir()
	cert, key, err := servingCert()
	if err != nil {
		return err
	}
	saKey, saPub, err := serviceAccountKeys()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"apiserver.crt": cert, "apiserver.key": key, "sa.key": saKey, "sa.pub": saPub,
		"tokens.csv":  []byte(adminToken + ",decap-admin,decap-admin,system:masters\n"),
		"stages.yaml": stages,
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	for name, data := range files {
		if err := os.WriteFile(path(name), data, 0o600); err != nil {
			return err
		}
	}
	cp.ca = cert
	var ports [5]string
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	etcdClient, etcdPeer, apiPort, schedulerPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4]

	if err := cp.start(filepath.Join(bin, "etcd"), "etcd",
		"--name=default", "--data-dir="+path("etcd"),
		"--listen-client-urls=http://127.0.0.1:"+etcdClient, "--advertise-client-urls=http://127.0.0.1:"+etcdClient,
		"--listen-peer-urls=http://127.0.0.1:"+etcdPeer, "--initial-advertise-peer-urls=http://127.0.0.1:"+etcdPeer,
		"--initial-cluster=default=http://127.0.0.1:"+etcdPeer,
		"--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}

	cp.server = "https://127.0.0.1:" + apiPort
	if err := cp.start(filepath.Join(bin, "kube-apiserver"), "kube-apiserver",
		"--etcd-servers=http://127.0.0.1:"+etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+apiPort,
		"--tls-cert-file="+path("apiserver.crt"), "--tls-private-key-file="+path("apiserver.key"),
		"--token-auth-file="+path("tokens.csv"), "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+path("sa.pub"),
		"--service-account-signing-key-file="+path("sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false", "--profiling=true"); err != nil { // the bench reads its CPU profile
		return err
	}

	if cp.Kubeconfig, err = cp.kubeconfig("admin", adminToken); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 100, 200
	cp.Config = rc
	if cp.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if err := cp.waitFor(90*time.Second, "kube-apiserver to be ready", func(ctx context.Context) error {
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		return nil
	}); err != nil {
		return err
	}

	if err := cp.start(filepath.Join(bin, "kube-scheduler"), "kube-scheduler",
		"--kubeconfig="+cp.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+schedulerPort); err != nil {
		return err
	}

	// The node first, so that kwok finds it to manage; kwok makes it Ready.
	_, err = cp.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
			Labels:      map[string]string{"kubernetes.io/hostname": NodeName, "type": "kwok"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create the fake node: %w", err)
	}
	if err := cp.start(filepath.Join(bin, "kwok"), "kwok",
		"--kubeconfig="+cp.Kubeconfig, "--config="+path("stages.yaml"),
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-ip=127.0.0.1", "--cidr=10.1.0.0/16", "--server-address=127.0.0.1:"+kwokPort); err != nil {
		return err
	}
	if err := cp.waitFor(60*time.Second, "kwok's node to be Ready", func(ctx context.Context) error {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node conditions: %v", n.Status.Conditions)
	}); err != nil {
		return err
	}
	// The API server taints a new node not-ready; the node lifecycle
	// controller (kube-controller-manager, not started here) would lift it.
	return cp.waitFor(30*time.Second, "the not-ready taint to be lifted", func(ctx context.Context) error {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(n.Spec.Taints) == 0 {
			return nil
		}
		n.Spec.Taints = nil
		_, err = cp.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		if err == nil {
			err = errors.New("just lifted")
		}
		return err
	})
}

// WriteKubeconfig writes a kubeconfig for the API server with a bearer
// token, and returns its path.
func (cp *ControlPlane) WriteKubeconfig(name, token string) string {
	cp.t.Helper()
	p, err := cp.kubeconfig(name, token)
	if err != nil {
		cp.t.Fatal(err)
	}
	return p
}

func (cp *ControlPlane) kubeconfig(name, token string) (string, error) {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: kubetest
  context: {cluster: kubetest, user: %s}
current-context: kubetest
`, cp.server, b64(cp.ca), name, token, name)
	p := filepath.Join(cp.Dir, name+".kubeconfig")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return p, nil
}

// ServiceAccountKubeconfig writes a kubeconfig that acts as the
// ServiceAccount namespace/name, with a token from the TokenRequest API,
// and returns its path.
func (cp *ControlPlane) ServiceAccountKubeconfig(namespace, name string) string {
	cp.t.Helper()
	p, err := cp.ServiceAccountConfig(namespace, name)
	if err != nil {
		cp.t.Fatal(err)
	}
	return p
}

// ServiceAccountConfig is ServiceAccountKubeconfig for a ControlPlane
// that Run started: it returns the error.
func (cp *ControlPlane) ServiceAccountConfig(namespace, name string) (string, error) {
	hour := int64(3600)
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of service account %s/%s: %w", namespace, name, err)
	}
	return cp.kubeconfig(namespace+"-"+name, tr.Status.Token)
}

// Kubectl runs kubectl as the admin, with stdin, and returns its combined
// output.
func (cp *ControlPlane) Kubectl(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig=" + cp.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

func (cp *ControlPlane) start(path, name string, args ...string) error {
	logFile, err := os.Create(filepath.Join(cp.Dir, name+".log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = cp.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	// Waited for at once, so that a process that crashes is noticed by
	// the next waitFor, not at its timeout.
	go func() { cmd.Wait(); close(p.exited) }()
	cp.procs = append(cp.procs, p)
	return nil
}

// Stop stops every process of the control plane, the last started first;
// a second call does nothing.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	cp.procs = nil
}

// Pids returns the process ID of each process of the control plane, by
// name ("etcd", "kube-apiserver", "kube-scheduler", "kwok").
func (cp *ControlPlane) Pids() map[string]int {
	pids := map[string]int{}
	for _, p := range cp.procs {
		pids[filepath.Base(p.cmd.Path)] = p.cmd.Process.Pid
	}
	return pids
}

// LogTails returns the last 8 KiB of each process's log.
func (cp *ControlPlane) LogTails() string {
	var b strings.Builder
	for _, name := range []string{"kube-apiserver", "kube-scheduler", "kwok", "etcd"} {
		log, _ := os.ReadFile(filepath.Join(cp.Dir, name+".log"))
		if len(log) > 8<<10 {
			log = log[len(log)-8<<10:]
		}
		fmt.Fprintf(&b, "--- %s log (tail) ---\n%s\n", name, log)
	}
	return b.String()
}

func (cp *ControlPlane) waitFor(timeout time.Duration, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range cp.procs {
			select {
			case <-p.exited:
				return fmt.Errorf("waiting for %s: %s exited: %v", what, filepath.Base(p.cmd.Path), p.cmd.ProcessState)
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = check(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not happen within %s: %v", what, timeout, last)
}

func servingCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func serviceAccountKeys() (keyPEM, pubPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// freePort is the port of proctest.UnusedAddr, for flags that take a port.
func freePort() (string, error) {
	addr, err := proctest.UnusedAddr()
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(addr)
	return port, err
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
