package awsevents_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/awsevents"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/events"
)

// Invariant 7 on the aws backend: a service killed (-9) between its record
// writes and their forward loses no event. The changes' events are in the
// records' items (the DynamoDB outbox), so another process's forwarder
// publishes them to the SNS topic, and a queue subscribed to it gets every
// one, in order per build.

const killedChildEnv = "DECAP_AWSEVENTS_KILLED_CHILD_TABLE"

// TestOutboxSurvivesKill runs a child process (this test binary, as
// TestOutboxKilledChild) that writes two builds' first three changes to
// DynamoDB and is killed (-9) before it forwards any; then a forwarder, as
// a restarted service runs it, publishes them, and a queue subscribed to
// the topic gets each build's events 1, 2, 3, in order, each at least once
// with its one ID, and the outbox ends empty.
func TestOutboxSurvivesKill(t *testing.T) {
	if os.Getenv(killedChildEnv) != "" {
		t.Skip("running as a child")
	}
	t.Parallel()
	w := newWorld(t, "listener")
	ddb := dynamoClient(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "evtkill-" + hex.EncodeToString(b[:]) + "-builds"
	if err := awsdynamo.CreateTables(t.Context(), ddb, awsdynamo.Tables{Builds: table}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestOutboxKilledChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), killedChildEnv+"="+table)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL after its writes:\n%s", err, out.String())
	}
	// Nothing was published: the queue is empty.
	if early := w.receiveAll(t, w.queues["listener"], 0); len(early) > 0 {
		t.Fatalf("the queue got %d messages before any forwarder ran; the child was to die before forwarding", len(early))
	}

	records := awsdynamo.NewRecords(ddb, table).WithEvents()
	stored, _, err := records.Waiting(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	running, err := records.Running(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	stored = append(stored, running...)
	if len(stored) != 2 {
		t.Fatalf("after the kill the table holds %d unfinished records, want the child's 2", len(stored))
	}

	// The restarted service's forwarder.
	f, err := events.NewForwarder(records.Outbox(), w.publisher(t), events.ForwarderConfig{
		Topic: awsevents.Topic, Source: "https://decap.test", Sweep: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	bodies := w.receiveAll(t, w.queues["listener"], 6)
	bodies = append(bodies, w.receiveAll(t, w.queues["listener"], 0)...) // a second delivery would come now
	got := map[build.ID][]int{}
	for _, body := range bodies {
		e, err := build.DecodeEvent([]byte(body))
		if err != nil {
			t.Fatalf("the queue got %.200q, no event: %v", body, err)
		}
		if e.ID != build.EventID(e.Subject, e.Version) || e.Source != "https://decap.test" {
			t.Errorf("event %s (build %s, version %d, source %q): want id <build>:<version> and the forwarder's source", e.ID, e.Subject, e.Version, e.Source)
		}
		got[e.Subject] = append(got[e.Subject], e.Version)
	}
	for _, r := range stored {
		vs := got[r.BuildID]
		if !slices.IsSorted(vs) || !slices.Equal(slices.Compact(slices.Clone(vs)), []int{1, 2, 3}) {
			t.Errorf("build %s: the subscribed queue got versions %v, want 1, 2, 3 in order (each at least once)", r.BuildID, vs)
		}
		if len(vs) > 3 {
			t.Logf("build %s: versions %v: delivered again (at least once)", r.BuildID, vs)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := records.Outbox().Pending(t.Context(), 10, 0)
		if err == nil && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the forwarder started, the outbox holds %d events (%v)", len(left), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestOutboxKilledChild is the child of TestOutboxSurvivesKill: it saves
// two builds' first three changes each to the table its environment names
// (events on, no forwarder) and kills itself.
func TestOutboxKilledChild(t *testing.T) {
	table := os.Getenv(killedChildEnv)
	if table == "" {
		t.Skip("only run as a child of TestOutboxSurvivesKill")
	}
	s := awsdynamo.NewRecords(dynamoClient(t), table).WithEvents()
	now := time.Now()
	for i := range 2 {
		r := build.Record{BuildID: build.NewID(now.Add(time.Duration(i) * time.Millisecond)), Team: "ae6rt", Project: "p", Ref: "main",
			RefType: build.Branch, Trigger: build.TriggerManual, Status: build.StatusQueued, QueuedAt: now}
		life := []func() error{
			func() error { return nil },
			func() error { return r.Defer(now, now.Add(time.Minute), "busy") },
			func() error {
				if i == 0 {
					return r.Start(now, "pod", "c0ffee")
				}
				return r.Defer(now, now.Add(2*time.Minute), "still busy")
			},
		}
		for _, change := range life {
			if err := change(); err != nil {
				t.Fatal(err)
			}
			if err := s.Save(t.Context(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Saves returned: written. Die with no forward.
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(time.Minute)
}

func dynamoClient(t *testing.T) *dynamodb.Client {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (make test does) to run the DynamoDB outbox tests")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
	if err != nil {
		t.Fatal(err)
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
}
