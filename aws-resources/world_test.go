// Package awsresources_test runs create-world.sh and destroy-world.sh against
// an AWS endpoint (in CI a moto_server started by scripts/with-moto.sh) and
// checks every resource they make, and that they leave nothing behind, with
// the AWS CLI. Without AWS_ENDPOINT_URL or the aws command the end-to-end test
// is skipped; the parameter checks run anyway against a stub aws that records
// every call.
package awsresources_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// cli runs the AWS CLI and the scripts in one environment.
type cli struct {
	env      []string
	endpoint string
	region   string
}

// newCLI skips t unless AWS_ENDPOINT_URL is set and bash and aws are on PATH.
// The environment drops every DECAP_* variable of the caller, so the scripts
// see only what a test sets.
func newCLI(t *testing.T) cli {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip(`AWS_ENDPOINT_URL is not set: run under scripts/with-moto.sh (make test does), or eval "$(scripts/moto.sh start)" first`)
	}
	for _, tool := range []string{"bash", "aws"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH", tool)
		}
	}
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	env := baseEnv()
	env = append(env, "AWS_REGION="+region, "AWS_DEFAULT_REGION="+region)
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		env = append(env, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test")
	}
	return cli{env: env, endpoint: endpoint, region: region}
}

func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DECAP_") && !strings.HasPrefix(kv, "AWS_REGION=") && !strings.HasPrefix(kv, "AWS_DEFAULT_REGION=") {
			env = append(env, kv)
		}
	}
	return env
}

// with returns a copy of c whose environment also has kvs.
func (c cli) with(kvs ...string) cli {
	c.env = append(slices.Clip(c.env), kvs...)
	return c
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs name with args in c's environment; a failure to start fails t.
func (c cli) run(t *testing.T, name string, args ...string) result {
	t.Helper()
	// Not t.Context(): that is canceled before Cleanup runs, and Cleanup
	// destroys what a failed test left.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %s: %v", name, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// script runs aws-resources/<name> with bash and logs how long it took.
func (c cli) script(t *testing.T, name string, args ...string) result {
	t.Helper()
	start := time.Now()
	r := c.run(t, "bash", append([]string{name}, args...)...)
	t.Logf("%s: exit %d in %v", strings.Join(append([]string{name}, args...), " "), r.code, time.Since(start).Round(time.Millisecond))
	return r
}

// aws runs an AWS CLI call against the endpoint.
func (c cli) aws(t *testing.T, args ...string) result {
	t.Helper()
	return c.run(t, "aws", append([]string{"--endpoint-url", c.endpoint, "--region", c.region, "--output", "json"}, args...)...)
}

// awsJSON runs an AWS CLI call that must succeed and decodes its answer into v.
func (c cli) awsJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	r := c.aws(t, args...)
	if r.code != 0 {
		t.Fatalf("aws %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("aws %s: decode %q: %v", strings.Join(args, " "), r.stdout, err)
	}
}

// awsMissing runs an AWS CLI call that must fail with an error matching
// pattern (the resource does not exist).
func (c cli) awsMissing(t *testing.T, pattern string, args ...string) {
	t.Helper()
	r := c.aws(t, args...)
	if r.code == 0 {
		t.Errorf("aws %s succeeded, want the resource gone; answer: %s", strings.Join(args, " "), r.stdout)
		return
	}
	if !regexp.MustCompile(pattern).MatchString(r.stderr) {
		t.Errorf("aws %s failed with %q, want an error matching %q", strings.Join(args, " "), r.stderr, pattern)
	}
}

// world is what create-world.sh makes for one prefix.
type world struct {
	prefix, account, partition, region string
}

func (w world) queue() string          { return w.prefix + "-builds.fifo" }
func (w world) dlq() string            { return w.prefix + "-builds-dlq.fifo" }
func (w world) bucket() string         { return w.prefix + "-builds" }
func (w world) policy(s string) string { return w.prefix + "-" + s }
func (w world) topic() string          { return w.prefix + "-build-events.fifo" }

// eventQueues are the queues of Decap's consumer groups of build events,
// subscribed to the topic.
func (w world) eventQueues() []string {
	return []string{w.prefix + "-events-github-statuses.fifo", w.prefix + "-events-webhooks.fifo"}
}
func (w world) topicARN() string {
	return fmt.Sprintf("arn:%s:sns:%s:%s:%s", w.partition, w.region, w.account, w.topic())
}
func (w world) tables() []string {
	return []string{w.prefix + "-locks", w.prefix + "-idempotency", w.prefix + "-builds", w.prefix + "-sessions"}
}

// tailQueues is the ARN pattern of the live tail's queues, which ingest
// makes and deletes itself: <prefix>-tail-<16 hex digits>.fifo.
func (w world) tailQueues() string {
	return w.sqsARN(w.prefix + "-tail-" + strings.Repeat("?", 16) + ".fifo")
}
func (w world) sqsARN(name string) string {
	return fmt.Sprintf("arn:%s:sqs:%s:%s:%s", w.partition, w.region, w.account, name)
}
func (w world) tableARN(name string) string {
	return fmt.Sprintf("arn:%s:dynamodb:%s:%s:table/%s-%s", w.partition, w.region, w.account, w.prefix, name)
}
func (w world) secretsARN() string {
	return fmt.Sprintf("arn:%s:secretsmanager:%s:%s:secret:%s/*", w.partition, w.region, w.account, w.prefix)
}
func (w world) policyARN(service string) string {
	return fmt.Sprintf("arn:%s:iam::%s:policy/%s", w.partition, w.account, w.policy(service))
}

// lines is the stdout both scripts print when every resource is in state.
func (w world) lines(state string) []string {
	var out []string
	add := func(kind, name string) { out = append(out, state+" "+kind+" "+name) }
	add("sqs-queue", w.dlq())
	add("sqs-queue", w.queue())
	if state == "deleted" || state == "absent" { // destroy-world.sh deletes the main queue first
		out[0], out[1] = out[1], out[0]
	}
	add("sns-topic", w.topic())
	for _, q := range w.eventQueues() {
		add("sqs-queue", q)
		if state == "created" || state == "exists" { // the subscriptions go with the topic
			add("sns-subscription", q)
		}
	}
	for _, table := range w.tables() {
		add("dynamodb-table", table)
	}
	add("s3-bucket", w.bucket())
	for _, s := range []string{"ingest", "dispatcher", "reaper"} {
		add("iam-policy", w.policy(s))
	}
	return out
}

// fields collapses each line's runs of blanks, for comparing with lines.
func fields(stdout string) []string {
	var out []string
	for line := range strings.Lines(stdout) {
		out = append(out, strings.Join(strings.Fields(line), " "))
	}
	return out
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "decap-test-" + hex.EncodeToString(b)
}

// TestWorld creates a world twice, checks every resource, destroys it twice
// and checks that nothing is left.
func TestWorld(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	w := world{prefix: randomPrefix(t), region: c.region}
	c = c.with("DECAP_PREFIX=" + w.prefix)

	var id struct{ Account, Arn string }
	c.awsJSON(t, &id, "sts", "get-caller-identity")
	w.account = id.Account
	w.partition = strings.Split(id.Arn, ":")[1]

	t.Cleanup(func() {
		if t.Failed() {
			if r := c.script(t, "destroy-world.sh", "--yes"); r.code != 0 {
				t.Logf("cleanup: destroy-world.sh: exit %d: %s", r.code, r.stderr)
			}
		}
	})

	for _, state := range []string{"created", "exists"} { // the second run changes nothing
		r := c.script(t, "create-world.sh")
		if r.code != 0 {
			t.Fatalf("create-world.sh: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if diff := cmp.Diff(w.lines(state), fields(r.stdout)); diff != "" {
			t.Fatalf("create-world.sh printed (-want +got):\n%s\nstderr:\n%s", diff, r.stderr)
		}
	}

	t.Run("resources", func(t *testing.T) {
		t.Run("queues", func(t *testing.T) { t.Parallel(); checkQueues(t, c, w) })
		t.Run("build events", func(t *testing.T) { t.Parallel(); checkBuildEvents(t, c, w) })
		for _, table := range []string{"locks", "idempotency", "builds", "sessions"} {
			t.Run("table "+table, func(t *testing.T) { t.Parallel(); checkTable(t, c, w, table) })
		}
		t.Run("bucket", func(t *testing.T) { t.Parallel(); checkBucket(t, c, w) })
		t.Run("policies", func(t *testing.T) {
			t.Parallel()
			policies := c.policies(t, w.prefix)
			for _, service := range []string{"ingest", "dispatcher", "reaper"} {
				t.Run(service, func(t *testing.T) { t.Parallel(); checkPolicy(t, c, w, service, policies) })
			}
		})
	})
	if t.Failed() {
		return
	}

	// A build's secret, as the API writes it, goes with the world; one of
	// another world whose prefix starts with this one's stays.
	mine, theirs := w.prefix+"/ae6rt/lab/NPM_TOKEN", w.prefix+"-other/ae6rt/lab/NPM_TOKEN"
	for _, name := range []string{mine, theirs} {
		if r := c.aws(t, "secretsmanager", "create-secret", "--name", name, "--secret-string", "v"); r.code != 0 {
			t.Fatalf("create-secret %s: %s", name, r.stderr)
		}
	}
	t.Cleanup(func() {
		c.aws(t, "secretsmanager", "delete-secret", "--secret-id", theirs, "--force-delete-without-recovery")
	})

	// A live-tail queue an ingest killed with it left goes with the world;
	// a queue that only starts the same stays.
	leftTail, notTail := w.prefix+"-tail-0123456789abcdef.fifo", w.prefix+"-tail-other.fifo"
	for _, name := range []string{leftTail, notTail} {
		if r := c.aws(t, "sqs", "create-queue", "--queue-name", name, "--attributes", "FifoQueue=true"); r.code != 0 {
			t.Fatalf("create-queue %s: %s", name, r.stderr)
		}
	}

	for _, state := range []string{"deleted", "absent"} { // the second run finds nothing to delete
		r := c.script(t, "destroy-world.sh", "--yes")
		if r.code != 0 {
			t.Fatalf("destroy-world.sh: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		want := w.lines(state)
		if state == "deleted" { // after the bucket, before the policies
			i := slices.Index(want, "deleted s3-bucket "+w.bucket())
			want = slices.Insert(want, i+1, "deleted secret "+mine)
			i = slices.Index(want, "deleted sqs-queue "+w.eventQueues()[len(w.eventQueues())-1])
			want = slices.Insert(want, i+1, "deleted sqs-queue "+leftTail)
		}
		if diff := cmp.Diff(want, fields(r.stdout)); diff != "" {
			t.Fatalf("destroy-world.sh printed (-want +got):\n%s\nstderr:\n%s", diff, r.stderr)
		}
		if state == "deleted" {
			q := c.queues(t, w.prefix)
			if url, ok := q[notTail]; !ok {
				t.Errorf("destroy-world.sh deleted %s, no tail queue of this world", notTail)
			} else {
				c.aws(t, "sqs", "delete-queue", "--queue-url", url)
			}
			checkGone(t, c, w)
			c.awsMissing(t, "ResourceNotFoundException", "secretsmanager", "describe-secret", "--secret-id", mine)
			if r := c.aws(t, "secretsmanager", "describe-secret", "--secret-id", theirs); r.code != 0 {
				t.Errorf("destroy-world.sh deleted %s, another world's secret: %s", theirs, r.stderr)
			}
		}
	}
}

func checkQueues(t *testing.T, c cli, w world) {
	common := map[string]string{
		"FifoQueue":                 "true",
		"ContentBasedDeduplication": "false",
		"VisibilityTimeout":         "30",
		"MessageRetentionPeriod":    "1209600",
		"SqsManagedSseEnabled":      "true",
	}
	urls := c.queues(t, w.prefix)
	for _, q := range []struct {
		name string
		want map[string]string
	}{
		{w.queue(), map[string]string{"ReceiveMessageWaitTimeSeconds": "20"}},
		{w.dlq(), nil},
	} {
		if urls[q.name] == "" {
			t.Errorf("queue %s is missing; have %v", q.name, urls)
			continue
		}
		var got struct{ Attributes map[string]string }
		c.awsJSON(t, &got, "sqs", "get-queue-attributes", "--queue-url", urls[q.name], "--attribute-names", "All")
		a := got.Attributes
		for k, want := range common {
			if a[k] != want {
				t.Errorf("%s: %s = %q, want %q", q.name, k, a[k], want)
			}
		}
		for k, want := range q.want {
			if a[k] != want {
				t.Errorf("%s: %s = %q, want %q", q.name, k, a[k], want)
			}
		}
		if a["QueueArn"] != w.sqsARN(q.name) {
			t.Errorf("%s: QueueArn = %q, want %q", q.name, a["QueueArn"], w.sqsARN(q.name))
		}

		if q.name == w.dlq() {
			if a["RedrivePolicy"] != "" {
				t.Errorf("%s: RedrivePolicy = %s, want none on the dead-letter queue", q.name, a["RedrivePolicy"])
			}
			allow, ok := a["RedriveAllowPolicy"]
			if !ok {
				t.Logf("%s: the endpoint does not report RedriveAllowPolicy (moto does not); not verified", q.name)
				continue
			}
			var p struct {
				RedrivePermission string   `json:"redrivePermission"`
				SourceQueueArns   []string `json:"sourceQueueArns"`
			}
			if err := json.Unmarshal([]byte(allow), &p); err != nil {
				t.Fatalf("%s: RedriveAllowPolicy %q: %v", q.name, allow, err)
			}
			if want := []string{w.sqsARN(w.queue())}; p.RedrivePermission != "byQueue" || !slices.Equal(p.SourceQueueArns, want) {
				t.Errorf("%s: RedriveAllowPolicy = %s, want byQueue from %v", q.name, allow, want)
			}
			continue
		}

		var redrive struct {
			DeadLetterTargetArn string          `json:"deadLetterTargetArn"`
			MaxReceiveCount     json.RawMessage `json:"maxReceiveCount"` // a number on AWS, a string in some answers
		}
		if err := json.Unmarshal([]byte(a["RedrivePolicy"]), &redrive); err != nil {
			t.Fatalf("%s: RedrivePolicy %q: %v", q.name, a["RedrivePolicy"], err)
		}
		if redrive.DeadLetterTargetArn != w.sqsARN(w.dlq()) {
			t.Errorf("%s: deadLetterTargetArn = %q, want %q", q.name, redrive.DeadLetterTargetArn, w.sqsARN(w.dlq()))
		}
		if got := strings.Trim(string(redrive.MaxReceiveCount), `"`); got != "1000" {
			t.Errorf("%s: maxReceiveCount = %s, want 1000", q.name, got)
		}
	}
}

// checkBuildEvents checks the events' FIFO topic, the consumer groups'
// queues and their raw subscriptions, and that an event published to the
// topic reaches every group's queue as it was published.
func checkBuildEvents(t *testing.T, c cli, w world) {
	var topic struct{ Attributes map[string]string }
	c.awsJSON(t, &topic, "sns", "get-topic-attributes", "--topic-arn", w.topicARN())
	for k, want := range map[string]string{"FifoTopic": "true", "ContentBasedDeduplication": "false", "TopicArn": w.topicARN()} {
		if got := topic.Attributes[k]; got != want {
			t.Errorf("topic %s: %s = %q, want %q", w.topic(), k, got, want)
		}
	}

	var subs struct {
		Subscriptions []struct{ SubscriptionArn, Protocol, Endpoint string }
	}
	c.awsJSON(t, &subs, "sns", "list-subscriptions-by-topic", "--topic-arn", w.topicARN())
	var endpoints, want []string
	for _, sub := range subs.Subscriptions {
		endpoints = append(endpoints, sub.Protocol+" "+sub.Endpoint)
		var attrs struct{ Attributes map[string]string }
		c.awsJSON(t, &attrs, "sns", "get-subscription-attributes", "--subscription-arn", sub.SubscriptionArn)
		if got := attrs.Attributes["RawMessageDelivery"]; got != "true" {
			t.Errorf("subscription of %s: RawMessageDelivery = %q, want true", sub.Endpoint, got)
		}
	}
	for _, q := range w.eventQueues() {
		want = append(want, "sqs "+w.sqsARN(q))
	}
	slices.Sort(endpoints)
	if diff := cmp.Diff(want, endpoints); diff != "" {
		t.Errorf("subscriptions of %s (-want +got):\n%s", w.topic(), diff)
	}

	urls := c.queues(t, w.prefix)
	for _, q := range w.eventQueues() {
		var got struct{ Attributes map[string]string }
		c.awsJSON(t, &got, "sqs", "get-queue-attributes", "--queue-url", urls[q], "--attribute-names", "All")
		a := got.Attributes
		for k, want := range map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "false", "VisibilityTimeout": "30",
			"MessageRetentionPeriod": "1209600", "SqsManagedSseEnabled": "true", "ReceiveMessageWaitTimeSeconds": "20"} {
			if a[k] != want {
				t.Errorf("%s: %s = %q, want %q", q, k, a[k], want)
			}
		}
		if a["RedrivePolicy"] != "" {
			t.Errorf("%s: RedrivePolicy %s, want none", q, a["RedrivePolicy"])
		}
		var policy struct {
			Statement []struct {
				Effect    string
				Principal struct{ Service string }
				Action    stringList
				Resource  stringList
				Condition map[string]map[string]string
			}
		}
		if err := json.Unmarshal([]byte(a["Policy"]), &policy); err != nil {
			t.Fatalf("%s: Policy %q: %v", q, a["Policy"], err)
		}
		if len(policy.Statement) != 1 {
			t.Fatalf("%s: Policy %s: want one statement", q, a["Policy"])
		}
		st := policy.Statement[0]
		if st.Effect != "Allow" || st.Principal.Service != "sns.amazonaws.com" || !slices.Equal(st.Action, stringList{"sqs:SendMessage"}) ||
			!slices.Equal(st.Resource, stringList{w.sqsARN(q)}) || st.Condition["ArnEquals"]["aws:SourceArn"] != w.topicARN() {
			t.Errorf("%s: Policy %s, want SendMessage for sns.amazonaws.com from %s only", q, a["Policy"], w.topicARN())
		}
	}

	// An event published to the topic reaches each group's queue as is.
	body := `{"specversion":"1.0","id":"world-test:1"}`
	if r := c.aws(t, "sns", "publish", "--topic-arn", w.topicARN(), "--message", body,
		"--message-group-id", "world-test", "--message-deduplication-id", "world-test:1"); r.code != 0 {
		t.Fatalf("sns publish: %s", r.stderr)
	}
	for _, q := range w.eventQueues() {
		var got struct{ Messages []struct{ Body string } }
		c.awsJSON(t, &got, "sqs", "receive-message", "--queue-url", urls[q], "--wait-time-seconds", "5")
		if len(got.Messages) != 1 || got.Messages[0].Body != body {
			t.Errorf("%s received %+v, want one message with the body published", q, got.Messages)
		}
	}
}

func checkTable(t *testing.T, c cli, w world, table string) {
	name := w.prefix + "-" + table
	type keyElement struct{ AttributeName, KeyType string }
	keys := func(ks []keyElement) string {
		var out []string
		for _, k := range ks {
			out = append(out, k.AttributeName+":"+k.KeyType)
		}
		return strings.Join(out, ",")
	}
	var got struct {
		Table struct {
			TableStatus            string
			KeySchema              []keyElement
			AttributeDefinitions   []struct{ AttributeName, AttributeType string }
			BillingModeSummary     struct{ BillingMode string }
			GlobalSecondaryIndexes []struct {
				IndexName  string
				KeySchema  []keyElement
				Projection struct{ ProjectionType string }
			}
		}
	}
	c.awsJSON(t, &got, "dynamodb", "describe-table", "--table-name", name)

	want := struct {
		hash, ttl string
		indexes   map[string]string
	}{hash: "pk", ttl: "ttl"}
	if table == "builds" {
		want.hash, want.ttl = "buildId", ""
		want.indexes = map[string]string{
			"by-project": "projectKey:HASH,queuedSort:RANGE ALL",
			"running":    "runningPk:HASH,buildId:RANGE ALL",
			"projects":   "kind:HASH,buildId:RANGE ALL",
			"unfinished": "unfinishedKey:HASH,queuedSort:RANGE ALL",
			"outbox":     "outboxShard:HASH,outboxSort:RANGE KEYS_ONLY",
		}
	}
	tab := got.Table
	if tab.TableStatus != "ACTIVE" || tab.BillingModeSummary.BillingMode != "PAY_PER_REQUEST" {
		t.Errorf("%s: status %s, billing %s; want ACTIVE, PAY_PER_REQUEST", name, tab.TableStatus, tab.BillingModeSummary.BillingMode)
	}
	if !strings.Contains(want.hash, ":") {
		want.hash += ":HASH"
	}
	if got := keys(tab.KeySchema); got != want.hash {
		t.Errorf("%s: key schema %s, want %s", name, got, want.hash)
	}
	for _, a := range tab.AttributeDefinitions {
		if a.AttributeType != "S" {
			t.Errorf("%s: attribute %s has type %s, want S", name, a.AttributeName, a.AttributeType)
		}
	}
	gotIndexes := map[string]string{}
	for _, ix := range tab.GlobalSecondaryIndexes {
		gotIndexes[ix.IndexName] = keys(ix.KeySchema) + " " + ix.Projection.ProjectionType
	}
	if diff := cmp.Diff(want.indexes, gotIndexes, cmp.Transformer("nil", func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	})); diff != "" {
		t.Errorf("%s: indexes (-want +got):\n%s", name, diff)
	}

	var ttl struct {
		TimeToLiveDescription struct{ TimeToLiveStatus, AttributeName string }
	}
	c.awsJSON(t, &ttl, "dynamodb", "describe-time-to-live", "--table-name", name)
	d := ttl.TimeToLiveDescription
	switch {
	case want.ttl == "" && d.TimeToLiveStatus == "ENABLED":
		t.Errorf("%s: TTL is enabled on %q; build records are kept", name, d.AttributeName)
	case want.ttl != "" && (d.TimeToLiveStatus != "ENABLED" || d.AttributeName != want.ttl):
		t.Errorf("%s: TTL %s on %q, want ENABLED on %q", name, d.TimeToLiveStatus, d.AttributeName, want.ttl)
	}

	var backups struct {
		ContinuousBackupsDescription struct {
			PointInTimeRecoveryDescription struct{ PointInTimeRecoveryStatus string }
		}
	}
	c.awsJSON(t, &backups, "dynamodb", "describe-continuous-backups", "--table-name", name)
	if s := backups.ContinuousBackupsDescription.PointInTimeRecoveryDescription.PointInTimeRecoveryStatus; s != "ENABLED" {
		t.Errorf("%s: point-in-time recovery %s, want ENABLED", name, s)
	}
}

func checkBucket(t *testing.T, c cli, w world) {
	b := w.bucket()
	var block struct {
		PublicAccessBlockConfiguration map[string]bool
	}
	c.awsJSON(t, &block, "s3api", "get-public-access-block", "--bucket", b)
	wantBlock := map[string]bool{"BlockPublicAcls": true, "IgnorePublicAcls": true, "BlockPublicPolicy": true, "RestrictPublicBuckets": true}
	if diff := cmp.Diff(wantBlock, block.PublicAccessBlockConfiguration); diff != "" {
		t.Errorf("%s: public access block (-want +got):\n%s", b, diff)
	}

	var enc struct {
		ServerSideEncryptionConfiguration struct {
			Rules []struct {
				ApplyServerSideEncryptionByDefault struct{ SSEAlgorithm, KMSMasterKeyID string }
			}
		}
	}
	c.awsJSON(t, &enc, "s3api", "get-bucket-encryption", "--bucket", b)
	rules := enc.ServerSideEncryptionConfiguration.Rules
	if len(rules) != 1 || rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm != "AES256" {
		t.Errorf("%s: default encryption %+v, want one rule, SSE-S3 (AES256)", b, rules)
	}

	var lc struct {
		Rules []struct {
			ID, Status, Prefix             string
			Filter                         struct{ Prefix string }
			Expiration                     struct{ Days int }
			AbortIncompleteMultipartUpload struct{ DaysAfterInitiation int }
		}
	}
	c.awsJSON(t, &lc, "s3api", "get-bucket-lifecycle-configuration", "--bucket", b)
	got := map[string]string{}
	for _, r := range lc.Rules {
		got[r.ID] = fmt.Sprintf("%s prefix=%q expire=%d abort=%d", r.Status, r.Filter.Prefix+r.Prefix, r.Expiration.Days, r.AbortIncompleteMultipartUpload.DaysAfterInitiation)
	}
	want := map[string]string{
		"expire-logs":              `Enabled prefix="logs/" expire=90 abort=0`,
		"expire-artifacts":         `Enabled prefix="artifacts/" expire=90 abort=0`,
		"abort-incomplete-uploads": `Enabled prefix="" expire=0 abort=7`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: lifecycle rules (-want +got):\n%s", b, diff)
	}
}

// stringList is a policy's Action or Resource: one string or a list.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(l))
}

// wantGrants is each service's policy as "action resource" pairs, sorted.
func wantGrants(w world, service string) []string {
	var out []string
	grant := func(actions []string, resources ...string) {
		for _, a := range actions {
			for _, r := range resources {
				out = append(out, a+" "+r)
			}
		}
	}
	queue, dlq := w.sqsARN(w.queue()), w.sqsARN(w.dlq())
	locks, idem, builds := w.tableARN("locks"), w.tableARN("idempotency"), w.tableARN("builds")
	sessions := w.tableARN("sessions")
	buildsAndIndexes := []string{builds, builds + "/index/by-project", builds + "/index/running", builds + "/index/projects", builds + "/index/unfinished", builds + "/index/outbox"}
	bucket := fmt.Sprintf("arn:%s:s3:::%s", w.partition, w.bucket())
	objects := []string{bucket + "/logs/*", bucket + "/artifacts/*"}
	secrets := w.secretsARN()

	// Every service writes build records, each change with its event in
	// the record's item; the forwarder of the events, in every service,
	// queries the outbox index, reads the items it names by key, and
	// publishes the events to the topic (nothing else may).
	grant([]string{"dynamodb:BatchGetItem"}, builds)
	grant([]string{"sns:Publish"}, w.topicARN())
	switch service {
	case "ingest":
		grant([]string{"sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}, queue)
		grant([]string{"sqs:GetQueueUrl", "sqs:GetQueueAttributes"}, dlq)
		grant([]string{"dynamodb:GetItem", "dynamodb:Query"}, buildsAndIndexes...)
		grant([]string{"dynamodb:PutItem", "dynamodb:UpdateItem"}, builds) // UpdateItem: build numbers, cancels of waiting builds
		grant([]string{"dynamodb:GetItem", "dynamodb:PutItem"}, idem)
		grant([]string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}, sessions) // the UI's sessions: sign in, check, sign out
		grant([]string{"dynamodb:Scan", "dynamodb:GetItem", "dynamodb:DeleteItem"}, locks)
		grant([]string{"dynamodb:PutItem"}, locks) // the dispatch gate; GetItem reads it
		grant([]string{"s3:GetObject"}, objects...)
		// The builds' secrets: written, never read (no GetSecretValue).
		grant([]string{"secretsmanager:CreateSecret", "secretsmanager:UpdateSecret", "secretsmanager:DescribeSecret", "secretsmanager:DeleteSecret"}, secrets)
		grant([]string{"secretsmanager:ListSecrets"}, "*") // ListSecrets takes no resource: names and metadata, no values
		// The live tail (GET /api/v1/events): a queue of each ingest
		// process's own, subscribed to the topic (Subscribe only for
		// such queues: checkPolicy), and the sweep of queues a killed
		// ingest left. TagQueue: the heartbeat, and tags on CreateQueue.
		grant([]string{"sqs:CreateQueue", "sqs:TagQueue", "sqs:ListQueueTags", "sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"}, w.tailQueues())
		grant([]string{"sns:Subscribe", "sns:Unsubscribe", "sns:ListSubscriptionsByTopic"}, w.topicARN())
	case "dispatcher":
		grant([]string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"}, queue)
		grant([]string{"sqs:GetQueueUrl", "sqs:SendMessage"}, dlq)
		grant([]string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"}, locks, idem)
		grant([]string{"dynamodb:BatchGetItem", "dynamodb:Scan"}, locks) // Scan: slots left by a release that failed halfway
		grant([]string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}, buildsAndIndexes...)
		grant([]string{"s3:PutObject"}, objects...)
		grant([]string{"secretsmanager:GetSecretValue"}, secrets) // the only reader of secret values
	case "reaper":
		// Decap's consumers of the build events, commit statuses and
		// outgoing webhooks, run in the reaper and read their groups' queues.
		var eventQueues []string
		for _, q := range w.eventQueues() {
			eventQueues = append(eventQueues, w.sqsARN(q))
		}
		grant([]string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"}, eventQueues...)
		grant([]string{"sqs:GetQueueUrl"}, queue, dlq)
		grant([]string{"sqs:ChangeMessageVisibility"}, queue) // wakes the request deferred behind a released lock
		grant([]string{"sqs:SendMessage"}, queue)             // queues the retries of builds infrastructure failures ended
		grant([]string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}, buildsAndIndexes...)
		grant([]string{"dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem", "dynamodb:Scan"}, locks)
		grant([]string{"s3:GetObject"}, objects...)
		grant([]string{"s3:PutObject"}, bucket+"/logs/*") // the Pod's log of a build that uploaded none
	}
	slices.Sort(out)
	return out
}

func checkPolicy(t *testing.T, c cli, w world, service string, policies map[string]policy) {
	arn := w.policyARN(service)
	p, ok := policies[w.policy(service)]
	if !ok || p.Arn != arn {
		t.Fatalf("policy %s: have %+v, want one with ARN %s", w.policy(service), policies, arn)
	}
	var v struct {
		PolicyVersion struct {
			Document struct {
				Version   string
				Statement []struct {
					Sid, Effect                                  string
					Action, Resource                             stringList
					NotAction, NotResource, Principal, Condition json.RawMessage
				}
			}
		}
	}
	c.awsJSON(t, &v, "iam", "get-policy-version", "--policy-arn", arn, "--version-id", p.DefaultVersionId)

	// The one condition: ingest may subscribe to the topic only its own
	// tail queues, over SQS (never an HTTP endpoint or another queue that
	// would take every build event out).
	wantCondition := map[string]map[string]string{
		"StringEquals": {"sns:Protocol": "sqs"},
		"StringLike":   {"sns:Endpoint": w.tailQueues()},
	}
	var got []string
	for _, s := range v.PolicyVersion.Document.Statement {
		if s.Effect != "Allow" || s.NotAction != nil || s.NotResource != nil || s.Principal != nil {
			t.Errorf("%s: statement %q: want a plain Allow of Action on Resource", arn, s.Sid)
		}
		if slices.Contains(s.Action, "sns:Subscribe") {
			var cond map[string]map[string]string
			if err := json.Unmarshal(s.Condition, &cond); err != nil || !cmp.Equal(cond, wantCondition) || len(s.Action) != 1 {
				t.Errorf("%s: statement %q allows sns:Subscribe with condition %s, want it alone with %v", arn, s.Sid, s.Condition, wantCondition)
			}
		} else if s.Condition != nil {
			t.Errorf("%s: statement %q has a condition, want a plain Allow of Action on Resource", arn, s.Sid)
		}
		for _, a := range s.Action {
			if strings.Contains(a, "*") {
				t.Errorf("%s: statement %q allows the wildcard action %q", arn, s.Sid, a)
			}
			for _, r := range s.Resource {
				// The only wildcards allowed are the two object prefixes,
				// the builds' secrets (their ARNs end in a random
				// suffix) and ListSecrets, which takes no resource.
				if strings.Contains(r, "*") && !strings.HasSuffix(r, ":s3:::"+w.bucket()+"/logs/*") && !strings.HasSuffix(r, ":s3:::"+w.bucket()+"/artifacts/*") &&
					r != w.secretsARN() && !(r == "*" && a == "secretsmanager:ListSecrets") {
					t.Errorf("%s: statement %q grants %s on the wildcard resource %q", arn, s.Sid, a, r)
				}
				// '?' only in the tail queues' pattern, one character each.
				if strings.Contains(r, "?") && r != w.tailQueues() {
					t.Errorf("%s: statement %q grants %s on the wildcard resource %q", arn, s.Sid, a, r)
				}
				got = append(got, a+" "+r)
			}
		}
	}
	slices.Sort(got)
	if diff := cmp.Diff(wantGrants(w, service), got); diff != "" {
		t.Errorf("%s grants (-want +got):\n%s", arn, diff)
	}
	if service == "dispatcher" && slices.Contains(got, "sqs:SendMessage "+w.sqsARN(w.queue())) {
		t.Errorf("%s may send to the main queue; only ingest (and other producers) may", arn)
	}
}

// checkGone lists every kind of resource and fails t if any of w's is left.
func checkGone(t *testing.T, c cli, w world) {
	t.Run("gone", func(t *testing.T) {
		t.Run("queues", func(t *testing.T) {
			t.Parallel()
			if q := c.queues(t, w.prefix); len(q) > 0 {
				t.Errorf("queues left: %v", q)
			}
		})
		t.Run("tables", func(t *testing.T) {
			t.Parallel()
			if left := c.tables(t, w.prefix); len(left) > 0 {
				t.Errorf("tables left: %v", left)
			}
		})
		t.Run("bucket", func(t *testing.T) {
			t.Parallel()
			var buckets struct{ Buckets []struct{ Name string } }
			c.awsJSON(t, &buckets, "s3api", "list-buckets")
			for _, b := range buckets.Buckets {
				if b.Name == w.bucket() {
					t.Errorf("bucket %s is left", b.Name)
				}
			}
		})
		t.Run("topic", func(t *testing.T) {
			t.Parallel()
			c.awsMissing(t, "NotFound|does not exist", "sns", "get-topic-attributes", "--topic-arn", w.topicARN())
			var subs struct {
				Subscriptions []struct{ TopicArn, Endpoint string }
			}
			c.awsJSON(t, &subs, "sns", "list-subscriptions")
			for _, sub := range subs.Subscriptions {
				if sub.TopicArn == w.topicARN() {
					t.Errorf("subscription of %s to the deleted topic is left", sub.Endpoint)
				}
			}
		})
		t.Run("policies", func(t *testing.T) {
			t.Parallel()
			if p := c.policies(t, w.prefix); len(p) > 0 {
				t.Errorf("policies left: %v", p)
			}
		})
	})
}

// queues returns the URLs of the queues whose names start with prefix, by name.
func (c cli) queues(t *testing.T, prefix string) map[string]string {
	t.Helper()
	r := c.aws(t, "sqs", "list-queues", "--queue-name-prefix", prefix)
	if r.code != 0 {
		t.Fatalf("sqs list-queues: exit %d: %s", r.code, r.stderr)
	}
	out := map[string]string{}
	if strings.TrimSpace(r.stdout) == "" { // the CLI prints nothing when there are none
		return out
	}
	var list struct{ QueueUrls []string }
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("sqs list-queues: decode %q: %v", r.stdout, err)
	}
	for _, u := range list.QueueUrls {
		out[u[strings.LastIndex(u, "/")+1:]] = u
	}
	return out
}

// tables returns the names of the tables that start with prefix.
func (c cli) tables(t *testing.T, prefix string) []string {
	t.Helper()
	var list struct{ TableNames []string }
	c.awsJSON(t, &list, "dynamodb", "list-tables")
	var out []string
	for _, name := range list.TableNames {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

type policy struct{ Arn, DefaultVersionId string }

// policies returns the customer-managed policies whose names start with
// prefix+"-", by name.
func (c cli) policies(t *testing.T, prefix string) map[string]policy {
	t.Helper()
	var list struct {
		Policies []struct {
			PolicyName string
			policy
		}
	}
	c.awsJSON(t, &list, "iam", "list-policies", "--scope", "Local")
	out := map[string]policy{}
	for _, p := range list.Policies {
		if strings.HasPrefix(p.PolicyName, prefix+"-") {
			out[p.PolicyName] = p.policy
		}
	}
	return out
}

// TestInvalidParameters checks that a bad parameter stops both scripts with a
// message naming it before any AWS call: the aws on PATH is a stub that
// records its calls, so it needs neither AWS nor moto.
func TestInvalidParameters(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not on PATH")
	}
	stubDir := t.TempDir()
	stub := "#!/bin/sh\necho \"$*\" >>\"$AWS_STUB_LOG\"\nexit 1\n"
	if err := os.WriteFile(filepath.Join(stubDir, "aws"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, env, message string
	}{
		{"prefix with capitals and punctuation", "DECAP_PREFIX=Bad_Prefix!", `invalid DECAP_PREFIX "Bad_Prefix!"`},
		{"prefix too short", "DECAP_PREFIX=ab", `invalid DECAP_PREFIX "ab"`},
		{"prefix too long", "DECAP_PREFIX=" + strings.Repeat("a", 41), "invalid DECAP_PREFIX"},
		{"prefix with a leading hyphen", "DECAP_PREFIX=-decap", "invalid DECAP_PREFIX"},
		{"retention of zero days", "DECAP_RETENTION_DAYS=0", "invalid DECAP_RETENTION_DAYS"},
		{"bucket with capitals", "DECAP_BUCKET=Decap_Builds", "invalid DECAP_BUCKET"},
		{"region", "AWS_REGION=mars", "invalid AWS_REGION"},
		{"endpoint", "AWS_ENDPOINT_URL=127.0.0.1:5000", "invalid AWS_ENDPOINT_URL"},
	}
	for _, tt := range tests {
		for _, script := range []string{"create-world.sh", "destroy-world.sh"} {
			t.Run(script+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				log := filepath.Join(t.TempDir(), "aws-calls")
				c := cli{env: append(baseEnv(),
					"PATH="+stubDir+string(os.PathListSeparator)+os.Getenv("PATH"),
					"AWS_STUB_LOG="+log, "AWS_ENDPOINT_URL=", "CI=true", tt.env)}
				var args []string
				if script == "destroy-world.sh" {
					args = []string{"--yes"}
				}
				r := c.script(t, script, args...)
				if r.code == 0 {
					t.Errorf("exit 0, want a failure")
				}
				if !strings.Contains(r.stderr, tt.message) {
					t.Errorf("stderr %q, want it to contain %q", r.stderr, tt.message)
				}
				if r.stdout != "" {
					t.Errorf("stdout %q, want nothing (no resource touched)", r.stdout)
				}
				if calls, err := os.ReadFile(log); err == nil {
					t.Errorf("aws was called, want no AWS call at all:\n%s", calls)
				}
			})
		}
	}

	// Against the endpoint as well, when there is one: nothing named after
	// the bad prefix exists afterwards.
	t.Run("endpoint", func(t *testing.T) {
		t.Parallel()
		c := newCLI(t).with("DECAP_PREFIX=Bad_Prefix!")
		r := c.script(t, "create-world.sh")
		if r.code == 0 || !strings.Contains(r.stderr, `invalid DECAP_PREFIX "Bad_Prefix!"`) {
			t.Fatalf("create-world.sh: exit %d, stderr %q; want a failure naming DECAP_PREFIX", r.code, r.stderr)
		}
		if q := c.queues(t, "Bad_Prefix"); len(q) > 0 {
			t.Errorf("queues %v exist after a rejected run", q)
		}
		if left := c.tables(t, "Bad_Prefix"); len(left) > 0 {
			t.Errorf("tables %v exist after a rejected run", left)
		}
	})
}
