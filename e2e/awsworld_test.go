package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// awsRegion is the region of every AWS world; moto accepts any.
const awsRegion = "us-east-1"

// awsCallTimeout bounds one AWS CLI call; awsScriptTimeout one run of
// create-world.sh or destroy-world.sh (~10 s each when the machine is idle).
const (
	awsCallTimeout   = 60 * time.Second
	awsScriptTimeout = 3 * time.Minute
)

// awsClusterSlots bounds how many clusters run on the AWS backend at once.
// moto spins a CPU while it long-polls a queue that has a visible message
// of a busy group, and every dispatcher long-polls all the time: more than
// two such clusters starve each other (and the builds) of the two cores.
var awsClusterSlots = make(chan struct{}, 2)

// awsWorld is one set of AWS resources, as aws-resources/create-world.sh
// creates them for a DECAP_PREFIX of its own, on the emulator at
// AWS_ENDPOINT_URL.
type awsWorld struct {
	t        *testing.T
	prefix   string
	endpoint string
	// env is the environment of the AWS CLI and the scripts.
	env []string
}

// requireAWS skips t unless the AWS end-to-end tests can run: an emulator
// (or AWS) at AWS_ENDPOINT_URL and the AWS CLI, which creates the
// resources and plays "another system".
func requireAWS(t *testing.T) string {
	t.Helper()
	requireE2E(t)
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (make test does) to run the AWS end-to-end tests")
	}
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skipf("the AWS CLI (aws) is not on PATH, and the AWS end-to-end tests create their resources with it: %v", err)
	}
	return endpoint
}

// newAWSWorld creates the resources of a fresh prefix with
// aws-resources/create-world.sh and destroys them with destroy-world.sh
// when the test ends (also when it failed, or creation failed halfway).
func newAWSWorld(t *testing.T) *awsWorld {
	t.Helper()
	endpoint := requireAWS(t)
	w := &awsWorld{t: t, prefix: "e2e-" + proctest.RandomHex(4), endpoint: endpoint}
	// Nothing of the developer's AWS or Decap settings leaks in: the
	// scripts see this world's prefix, the endpoint and test credentials.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "DECAP_") {
			w.env = append(w.env, kv)
		}
	}
	w.env = append(w.env, w.awsEnv()...)
	w.env = append(w.env, "DECAP_PREFIX="+w.prefix, "AWS_DEFAULT_REGION="+awsRegion, "AWS_PAGER=", "CI=true")
	t.Logf("AWS world %s on %s", w.prefix, endpoint)

	// Registered first, so it runs last: after the cluster is gone.
	t.Cleanup(func() {
		if out, err := w.script("destroy-world.sh", "--yes"); err != nil {
			t.Errorf("destroy-world.sh for prefix %s: %v\n%s", w.prefix, err, out)
		}
	})
	if out, err := w.script("create-world.sh"); err != nil {
		t.Fatalf("create-world.sh for prefix %s: %v\n%s", w.prefix, err, out)
	}
	return w
}

// awsEnv is what points a process at the world's endpoint.
func (w *awsWorld) awsEnv() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + w.endpoint,
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=" + awsRegion,
	}
}

// serviceEnv is the environment that puts a service on this world.
func (w *awsWorld) serviceEnv() []string {
	return append([]string{"DECAP_BACKEND=aws", "DECAP_PREFIX=" + w.prefix}, w.awsEnv()...)
}

// cluster returns a cluster on this world, once fewer than two other AWS
// clusters run (see awsClusterSlots). The slot is given back when the
// cluster's processes are gone.
func (w *awsWorld) cluster(opts proctest.Options) *proctest.Cluster {
	w.t.Helper()
	waited := time.Now()
	awsClusterSlots <- struct{}{}
	if d := time.Since(waited); d > time.Second {
		w.t.Logf("waited %s for another AWS cluster to end", d.Round(time.Millisecond))
	}
	w.t.Cleanup(func() { <-awsClusterSlots })
	opts.Env = append(opts.Env, w.serviceEnv()...)
	return newCluster(w.t, opts)
}

func (w *awsWorld) queue() string  { return w.prefix + "-builds.fifo" }
func (w *awsWorld) dlq() string    { return w.prefix + "-builds-dlq.fifo" }
func (w *awsWorld) bucket() string { return w.prefix + "-builds" }

// script runs aws-resources/<name> and returns its output. It does not use
// the test's context: that ends before Cleanup, which destroys the world.
func (w *awsWorld) script(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), awsScriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(moduleRoot, "aws-resources", name)}, args...)...)
	cmd.Env = w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	w.t.Logf("%s: %v in %s", name, exitStatus(err), time.Since(start).Round(time.Millisecond))
	return out.String(), err
}

func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// cli runs an AWS CLI call against the world's endpoint and returns its
// stdout. The endpoint is passed as --endpoint-url: the AWS CLI v1 ignores
// AWS_ENDPOINT_URL for some services (SQS among them).
func (w *awsWorld) cli(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), awsCallTimeout)
	defer cancel()
	full := append([]string{"--endpoint-url", w.endpoint, "--region", awsRegion, "--output", "json"}, args...)
	cmd := exec.CommandContext(ctx, "aws", full...)
	cmd.Env = w.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("aws %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// cliJSON runs an AWS CLI call that must succeed and decodes its answer
// into v; an empty answer (the CLI prints nothing for, e.g., an empty
// receive) leaves v alone.
func (w *awsWorld) cliJSON(v any, args ...string) {
	w.t.Helper()
	out, err := w.cli(args...)
	if err != nil {
		w.t.Fatal(err)
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return
	}
	if err := json.Unmarshal(out, v); err != nil {
		w.t.Fatalf("aws %s: decode %q: %v", strings.Join(args, " "), out, err)
	}
}

// queueURL returns the URL of the queue called name.
func (w *awsWorld) queueURL(name string) string {
	w.t.Helper()
	var ans struct{ QueueUrl string }
	w.cliJSON(&ans, "sqs", "get-queue-url", "--queue-name", name)
	if ans.QueueUrl == "" {
		w.t.Fatalf("sqs get-queue-url %s: got no URL", name)
	}
	return ans.QueueUrl
}

// queueDepth is what SQS says a queue holds.
type queueDepth struct {
	visible, inFlight int
}

func (d queueDepth) String() string {
	return fmt.Sprintf("%d visible, %d in flight", d.visible, d.inFlight)
}

// depth returns how many messages the queue at url holds. Deferred
// messages count as in flight (they are invisible until their next
// attempt).
func (w *awsWorld) depth(url string) (queueDepth, error) {
	out, err := w.cli("sqs", "get-queue-attributes", "--queue-url", url,
		"--attribute-names", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
	if err != nil {
		return queueDepth{}, err
	}
	var ans struct{ Attributes map[string]string }
	if err := json.Unmarshal(out, &ans); err != nil {
		return queueDepth{}, fmt.Errorf("decode queue attributes %q: %w", out, err)
	}
	var d queueDepth
	var errs []error
	for name, n := range map[string]*int{
		"ApproximateNumberOfMessages":           &d.visible,
		"ApproximateNumberOfMessagesNotVisible": &d.inFlight,
	} {
		v, err := strconv.Atoi(ans.Attributes[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("queue attribute %s: %w", name, err))
		}
		*n = v
	}
	return d, errors.Join(errs...)
}

// sendMessage sends a message to a FIFO queue as another system would,
// with the AWS CLI, and returns its MessageId.
func (w *awsWorld) sendMessage(queueURL, groupID, dedupID, body string) string {
	w.t.Helper()
	var ans struct{ MessageId string }
	w.cliJSON(&ans, "sqs", "send-message", "--queue-url", queueURL,
		"--message-group-id", groupID, "--message-deduplication-id", dedupID, "--message-body", body)
	if ans.MessageId == "" {
		w.t.Fatalf("sqs send-message to %s: got no MessageId", queueURL)
	}
	return ans.MessageId
}

// sqsMessage is a received message, as far as the tests read it.
type sqsMessage struct {
	MessageId         string
	Body              string
	Attributes        map[string]string
	MessageAttributes map[string]struct {
		DataType    string
		StringValue string
	}
}

// receive long-polls the queue at url for up to wait and returns what came,
// with every attribute and message attribute.
func (w *awsWorld) receive(url string, wait time.Duration) ([]sqsMessage, error) {
	out, err := w.cli("sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "10",
		"--wait-time-seconds", strconv.Itoa(int(wait/time.Second)),
		"--attribute-names", "All", "--message-attribute-names", "All")
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return nil, err
	}
	var ans struct{ Messages []sqsMessage }
	if err := json.Unmarshal(out, &ans); err != nil {
		return nil, fmt.Errorf("decode received messages %q: %w", out, err)
	}
	return ans.Messages, nil
}

// s3Object is what head-object says of an object.
type s3Object struct {
	ContentLength int64
	ContentType   string
}

// headObject returns the metadata of an object in the world's bucket; an
// object that is not there is an error.
func (w *awsWorld) headObject(key string) (s3Object, error) {
	out, err := w.cli("s3api", "head-object", "--bucket", w.bucket(), "--key", key)
	if err != nil {
		return s3Object{}, err
	}
	var obj s3Object
	if err := json.Unmarshal(out, &obj); err != nil {
		return s3Object{}, fmt.Errorf("decode head-object %q: %w", out, err)
	}
	return obj, nil
}

// objectKeys lists the keys in the world's bucket under prefix.
func (w *awsWorld) objectKeys(prefix string) []string {
	w.t.Helper()
	var ans struct{ Contents []struct{ Key string } }
	w.cliJSON(&ans, "s3api", "list-objects-v2", "--bucket", w.bucket(), "--prefix", prefix)
	var keys []string
	for _, o := range ans.Contents {
		keys = append(keys, o.Key)
	}
	return keys
}
