package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The AWS scenarios run the same services with DECAP_BACKEND=aws on
// resources that aws-resources/create-world.sh creates for a prefix of
// their own (after e2e/awsworld_test.go). The burst runs against
// AWS_ENDPOINT_URL (make test-reliability starts a moto_server for it);
// the outage starts a moto_server of its own, which it may freeze without
// disturbing anybody else.

const awsRegion = "us-east-1"

// awsWorld is one prefix's resources on one endpoint.
type awsWorld struct {
	t        *testing.T
	prefix   string
	endpoint string
	env      []string
}

func newAWSWorld(t *testing.T, endpoint string) *awsWorld {
	t.Helper()
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skipf("AWS scenarios skipped: the AWS CLI (aws) is not on PATH, and the resources are created with it: %v", err)
	}
	w := &awsWorld{t: t, prefix: "rel-" + proctest.RandomHex(4), endpoint: endpoint}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "DECAP_") {
			w.env = append(w.env, kv)
		}
	}
	w.env = append(w.env, w.awsEnv()...)
	w.env = append(w.env, "DECAP_PREFIX="+w.prefix, "AWS_DEFAULT_REGION="+awsRegion, "AWS_PAGER=", "CI=true")
	t.Cleanup(func() {
		if out, err := w.script("destroy-world.sh", "--yes"); err != nil {
			t.Logf("destroy-world.sh for prefix %s: %v\n%s", w.prefix, err, out)
		}
	})
	if out, err := w.script("create-world.sh"); err != nil {
		t.Fatalf("create-world.sh for prefix %s: %v\n%s", w.prefix, err, out)
	}
	return w
}

func (w *awsWorld) awsEnv() []string {
	return []string{"AWS_ENDPOINT_URL=" + w.endpoint, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=" + awsRegion}
}

func (w *awsWorld) serviceEnv() []string {
	return append([]string{"DECAP_BACKEND=aws", "DECAP_PREFIX=" + w.prefix}, w.awsEnv()...)
}

func (w *awsWorld) script(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(moduleRoot, "aws-resources", name)}, args...)...)
	cmd.Env = w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	w.t.Logf("%s (prefix %s): %v in %s", name, w.prefix, err, time.Since(start).Round(time.Millisecond))
	return out.String(), err
}

// requireEndpoint returns AWS_ENDPOINT_URL or skips t.
func requireEndpoint(t *testing.T) string {
	t.Helper()
	requireSuite(t)
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS scenarios skipped: AWS_ENDPOINT_URL is not set (make test-reliability runs them against a moto_server of its own)")
	}
	return endpoint
}

// TestAWSBurst is the burst on the AWS backend, smaller: moto is slow, and
// a busy branch's next request may wait for the next long poll (20 s).
func TestAWSBurst(t *testing.T) {
	endpoint := requireEndpoint(t)
	r := newRow(t, "burst", "aws (moto)")
	w := newAWSWorld(t, endpoint)
	s := newScripts(t)
	s.addTracedWith(t, "rel", "app", burstDescriptor, 0, 0)
	const capacity = 4
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity, Env: w.serviceEnv()})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("dispatcher")
	c.Start("ingest")
	runBurst(t, r, c, cfg.awsBurstRequests, cfg.awsBurstBranches, capacity)
}

// motoServer is a moto_server this test started, on a port of its own.
type motoServer struct {
	cmd  *exec.Cmd
	addr string
}

func startMoto(t *testing.T) *motoServer {
	t.Helper()
	path, err := exec.LookPath("moto_server")
	if err != nil {
		t.Skipf("AWS outage skipped: moto_server is not on PATH, and the outage freezes a moto_server of its own: %v", err)
	}
	addr := proctest.FreeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	log, err := os.Create(filepath.Join(t.TempDir(), "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(path, "-H", host, "-p", port)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	m := &motoServer{cmd: cmd, addr: addr}
	t.Cleanup(func() {
		// Only this process group: the moto_server started here.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server on %s not ready after 60 s: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("started moto_server (pid %d) on %s", cmd.Process.Pid, addr)
	return m
}

// freeze and thaw stop and continue the moto_server's process group.
func (m *motoServer) freeze() error { return syscall.Kill(-m.cmd.Process.Pid, syscall.SIGSTOP) }
func (m *motoServer) thaw() error   { return syscall.Kill(-m.cmd.Process.Pid, syscall.SIGCONT) }

// TestAWSOutage freezes the AWS backend (SIGSTOP of a moto_server the test
// started itself) for the scale's outage time; see runOutage.
func TestAWSOutage(t *testing.T) {
	requireSuite(t)
	r := newRow(t, "outage", "aws (own moto)")
	moto := startMoto(t)
	w := newAWSWorld(t, "http://"+moto.addr)
	runOutage(t, r, w.serviceEnv(), "freezing moto", func(*proctest.Cluster) error {
		if err := moto.freeze(); err != nil {
			return fmt.Errorf("SIGSTOP moto: %w", err)
		}
		return nil
	}, func() error {
		if err := moto.thaw(); err != nil {
			return fmt.Errorf("SIGCONT moto: %w", err)
		}
		return nil
	})
}

// runOutage makes the backend unavailable with begin for the scale's outage
// time, then available again with end, while push webhooks keep coming
// (invariants 1, 2 and 4): the services stay up, ingest's /readyz drops and
// comes back by itself, every webhook answered 202 builds exactly once, and
// every webhook not answered 202 during the outage is redelivered
// afterwards, as GitHub would, and builds exactly once too.
func runOutage(t *testing.T, r *row, env []string, what string, begin func(*proctest.Cluster) error, end func() error) {
	t.Helper()
	s := newScripts(t)
	s.addTraced(t, "rel", "app", 200*time.Millisecond, 500*time.Millisecond)
	const capacity = 4
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity, Env: env})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	m := startMonitor(t, c, r, capacity)
	short := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}

	var ds []*delivery
	var failed []*delivery // not answered 202: GitHub redelivers these
	send := func(i int) {
		branch := fmt.Sprintf("o-%03d", i)
		d := &delivery{id: proctest.NewDelivery(), branch: branch, body: proctest.PushPayload("rel", "app", branch)}
		r.add(&r.requests, 1)
		id, err := c.SendPush(short, d.id, d.body)
		if err != nil {
			t.Logf("delivery %s during the outage: %v (to be redelivered)", d.id, err)
			failed = append(failed, d)
			return
		}
		d.build = id
		r.add(&r.deliveries, 1)
		ds = append(ds, d)
	}
	n := 0
	for range 10 {
		send(n)
		n++
	}

	t.Logf("outage: %s for %s", what, cfg.outage)
	if err := begin(c); err != nil {
		t.Fatalf("begin the outage: %v", err)
	}
	r.add(&r.outages, 1)
	frozen := time.Now()
	dropped := false
	for time.Since(frozen) < cfg.outage {
		if ok, _ := proctest.Ready(short, c.IngestAddr()); !ok {
			dropped = true
		}
		send(n)
		n++
		time.Sleep(500 * time.Millisecond)
	}
	if err := end(); err != nil {
		t.Fatalf("end the outage: %v", err)
	}
	t.Logf("outage over after %s; %d webhooks not answered 202", time.Since(frozen).Round(time.Millisecond), len(failed))
	if !dropped {
		r.violate(t, "ingest's /readyz answered 200 all through a %s backend outage; want it to drop", cfg.outage)
	}
	if crashes := c.Crashed(); len(crashes) > 0 {
		t.Fatalf("services did not survive the outage: %v", crashes)
	}
	for _, s := range c.Services() {
		c.WaitReady(s) // comes back by itself
	}
	t.Logf("every service ready again %s after the outage", time.Since(frozen.Add(cfg.outage)).Round(time.Millisecond))

	// GitHub redelivers what was not answered 2xx; then a few more.
	for _, d := range failed {
		r.add(&r.requests, 1)
		id, err := c.SendPush(c.Client(), d.id, d.body)
		if err != nil {
			t.Errorf("redelivery of %s after the outage: %v", d.id, err)
			continue
		}
		r.add(&r.redeliveries, 1)
		r.add(&r.deliveries, 1)
		d.build = id
		ds = append(ds, d)
	}
	for range 10 {
		send(n)
		n++
	}
	waitEnded(t, c, m, len(ds))
	waitSettled(t, c, m)
	m.halt()
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.build
	}
	checkBuilds(t, r, c, m, ids, capacity, nil, nil)
}
