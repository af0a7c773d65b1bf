package e2e_test

import (
	"bufio"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The README's shell examples, extracted from the README itself, run as a
// newcomer runs them: in another shell, from the checkout, while `make run`
// (or `make run-aws`) runs. They cannot drift from what works.
//
// What differs from a newcomer's machine, and nothing else: the checkout is
// a temporary directory whose scripts/, internal/, examples/ and
// aws-resources/ link to this one, and bin/ to the binaries TestMain built (so .decap/ and .decap-aws/ are the
// test's own); make run is scripts/run-local.sh with the binaries TestMain
// built (what make run runs after make build); ingest listens on a free
// port, so "127.0.0.1:8080" in the examples is replaced by it and
// DECAP_ADDR and DECAP_URL are set to it; under make run-aws the AWS
// resources have a prefix of the test's own, replacing "decap-" in the
// queue and topic names, and moto is the test's (MOTO_PORT says which).

// readmeBlock is one ```sh block of the README.
type readmeBlock struct {
	line    int    // of the opening fence
	heading string // the section it is in
	text    string
}

func (b readmeBlock) String() string {
	return "README.md:" + strconv.Itoa(b.line) + " (" + b.heading + ")"
}

// readmeBlocks returns every ```sh block of README.md.
func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	f, err := os.Open(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []readmeBlock
		cur     *readmeBlock
		heading string
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case line == "```sh":
			cur = &readmeBlock{line: n, heading: heading}
		case strings.HasPrefix(line, "#"):
			heading = strings.TrimLeft(line, "# ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// startsMake matches a command line that runs make.
var startsMake = regexp.MustCompile(`(?m)^make `)

// notRunHere says why a block is not run by this test, "" when it is: the
// commands that start Decap (this test starts it), and those for a real
// cluster or AWS account.
func notRunHere(b readmeBlock, aws bool) string {
	switch {
	case startsMake.MatchString(b.text):
		return "starts Decap or its tests"
	case strings.Contains(b.text, "kubectl"):
		return "needs a Kubernetes cluster"
	case strings.Contains(b.text, "aws ec2"):
		return "needs an AWS account"
	case strings.Contains(b.text, "aws ") && !aws:
		return "needs make run-aws"
	}
	return ""
}

// newCheckout makes the temporary checkout the examples run in.
func newCheckout(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "checkout")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"scripts", "internal", "examples", "aws-resources"} {
		if err := os.Symlink(filepath.Join(moduleRoot, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// bin/ is what make build leaves: the binaries TestMain built.
	if err := os.Symlink(binDir, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	// Builds run under users of their own when the test runs as root: let
	// them reach the data directory, as under a real checkout.
	proctest.BuildWritable(t, filepath.Join(dir, ".reachable"))
	return dir
}

// waitRunning waits for make run's banner and returns it.
func waitRunning(t *testing.T, r *scriptRun, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		out := r.out.String()
		if strings.Contains(out, "Decap is running") {
			return out
		}
		select {
		case <-r.done:
			t.Fatalf("make run exited before it was running:\n%s", out)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("make run is not running after %s:\n%s", d, r.out.String())
	return ""
}

// runREADMEExamples runs every block the test can run, in the checkout,
// in order, each in a fresh bash with "set -eo pipefail", and wants each to
// exit 0 without an API error in its output. It returns the outputs by
// block.
func runREADMEExamples(t *testing.T, checkout, addr string, aws bool, env []string, edit func(string) string) map[string]string {
	t.Helper()
	outputs := map[string]string{}
	ran := 0
	for _, b := range readmeBlocks(t) {
		if why := notRunHere(b, aws); why != "" {
			t.Logf("%s: not run: %s", b, why)
			continue
		}
		ran++
		script := strings.ReplaceAll(b.text, "127.0.0.1:8080", addr)
		if edit != nil {
			script = edit(script)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = checkout
		cmd.Env = scriptEnv(append([]string{"DECAP_ADDR=" + addr, "DECAP_URL=http://" + addr}, env...)...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		t.Logf("%s: %v in %s", b, exitStatus(err), time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Errorf("%s failed: %v\n--- commands:\n%s--- output:\n%s", b, err, script, out)
		} else if strings.Contains(string(out), `{"error"`) {
			t.Errorf("%s: the API answered with an error:\n--- commands:\n%s--- output:\n%s", b, script, out)
		}
		outputs[b.heading] += string(out)
	}
	if ran < 4 {
		t.Fatalf("ran %d of the README's shell examples, want at least 4: are they still ```sh blocks?", ran)
	}
	return outputs
}

// checkWebhookExample wants the webhook example to have followed its
// build to success and listed its artifacts.
func checkWebhookExample(t *testing.T, outputs map[string]string) {
	t.Helper()
	out := outputs["Send a signed webhook by hand"]
	for _, want := range []string{`"lockKey":"Codertocat/Hello-World/master"`, "== Decap build", `"status":"succeeded"`, "build-info.txt"} {
		if !strings.Contains(out, want) {
			t.Errorf("the webhook example's output has no %s:\n%s", want, out)
		}
	}
}

// Under make run, every shell example of the README works as written.
func TestREADMEExamplesMakeRun(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	checkout := newCheckout(t)
	addr := proctest.FreeAddr(t)
	r := startScript(t, checkout, "scripts/run-local.sh", []string{
		"BIN=" + binDir, "DECAP_ADDR=" + addr,
		"DECAP_DISPATCHER_ADDR=" + proctest.FreeAddr(t), "DECAP_REAPER_ADDR=" + proctest.FreeAddr(t),
	})
	waitRunning(t, r, 60*time.Second)
	outputs := runREADMEExamples(t, checkout, addr, false, nil, nil)
	checkWebhookExample(t, outputs)
	if out := outputs["Changing the build-scripts repository"]; strings.Count(out, "projects") != 2 {
		t.Errorf("the refresh examples did not both refresh:\n%s", out)
	}
}

// Under make run-aws too: the secrets it generates are where the examples
// read them (they were in .decap-aws/, and every example got 401), and the
// AWS CLI example works in a fresh shell.
func TestREADMEExamplesMakeRunAWS(t *testing.T) {
	endpoint := requireAWS(t)
	t.Parallel()
	u, err := url.Parse(endpoint)
	if err != nil || u.Port() == "" {
		t.Fatalf("AWS_ENDPOINT_URL %q has no port", endpoint)
	}
	awsClusterSlots <- struct{}{}
	t.Cleanup(func() { <-awsClusterSlots })
	checkout := newCheckout(t)
	addr := proctest.FreeAddr(t)
	w := &awsWorld{t: t, prefix: "e2e-" + proctest.RandomHex(4), endpoint: endpoint}
	w.env = scriptEnv(append(w.awsEnv(), "DECAP_PREFIX="+w.prefix, "AWS_DEFAULT_REGION="+awsRegion, "AWS_PAGER=", "CI=true")...)
	t.Cleanup(func() {
		if out, err := w.script("destroy-world.sh", "--yes"); err != nil {
			t.Errorf("destroy-world.sh for prefix %s: %v\n%s", w.prefix, err, out)
		}
	})
	// run-aws.sh uses the moto at AWS_ENDPOINT_URL when it is set, as
	// make run-aws does when a developer points it at one.
	r := startScript(t, checkout, "scripts/run-aws.sh", append(w.awsEnv(),
		"BIN="+binDir, "DECAP_PREFIX="+w.prefix, "DECAP_ADDR="+addr,
		"DECAP_DISPATCHER_ADDR="+proctest.FreeAddr(t), "DECAP_REAPER_ADDR="+proctest.FreeAddr(t),
	))
	waitRunning(t, r, 3*time.Minute)
	outputs := runREADMEExamples(t, checkout, addr, true, []string{"MOTO_PORT=" + u.Port()}, func(s string) string {
		return strings.ReplaceAll(s, "decap-build", w.prefix+"-build") // decap-builds.fifo, decap-build-events.fifo
	})
	checkWebhookExample(t, outputs)
	if out := outputs["Running on AWS"]; !strings.Contains(out, `"MessageId"`) {
		t.Errorf("the AWS CLI example sent no message:\n%s", out)
	}
}
