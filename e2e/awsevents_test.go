package e2e_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestAWSBuildEventsReachASubscribedQueue plays another system that
// subscribes an SQS FIFO queue of its own to the build events' topic with
// the AWS CLI, as the README's "Build events" shows: a push's build
// delivers its events to it, queued → started → succeeded, in order
// (invariant 7), each a CloudEvent whose data is the record.
func TestAWSBuildEventsReachASubscribedQueue(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addTraced("e2e", "app", 200*time.Millisecond)
	queueURL := w.subscribeToBuildEvents(w.prefix + "-listener.fifo")
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	id := c.Push("e2e", "app", "main")
	c.WaitSucceeded(id)

	type event struct {
		ID, Source, Type, Subject string
		Version                   int `json:"recordversion"`
		Data                      struct{ ID, Status string }
	}
	var got []event
	c.WaitFor(proctest.BuildTimeout, "build "+id+"'s succeeded event in "+queueURL, func() (bool, string) {
		msgs, err := w.receiveAndDelete(queueURL)
		if err != nil {
			return false, err.Error()
		}
		for _, body := range msgs {
			var e event
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("the subscribed queue got %q, no CloudEvent: %v", body, err)
			}
			got = append(got, e)
		}
		done := slices.ContainsFunc(got, func(e event) bool { return e.Subject == id && e.Type == "io.decap.build.succeeded" })
		return done, fmt.Sprintf("%d events so far", len(got))
	})

	var types []string
	last := 0
	for _, e := range got {
		if e.Subject != id {
			continue
		}
		if e.Version < last {
			t.Errorf("event %s (version %d) came after version %d", e.ID, e.Version, last)
		}
		if e.Version == last {
			continue // at least once: a second delivery of the same change
		}
		last = e.Version
		if e.ID != fmt.Sprintf("%s:%d", id, e.Version) || e.Data.ID != id || !strings.HasPrefix(e.Source, "http") {
			t.Errorf("event %+v: want id <build>:<version>, data the build's record, source the public URL", e)
		}
		typ := strings.TrimPrefix(e.Type, "io.decap.build.")
		if len(types) == 0 || types[len(types)-1] != typ { // a launch claim repeats queued
			types = append(types, typ)
		}
	}
	if want := []string{"queued", "started", "succeeded"}; !slices.Equal(types, want) {
		t.Errorf("build %s's events: got types %v, want %v in order (events %+v)", id, types, want, got)
	}
}

// subscribeToBuildEvents makes an SQS FIFO queue called name and subscribes
// it to the world's build events with the README's AWS CLI commands, and
// returns its URL.
func (w *awsWorld) subscribeToBuildEvents(name string) string {
	w.t.Helper()
	var id struct{ Account, Arn string }
	w.cliJSON(&id, "sts", "get-caller-identity")
	partition := strings.Split(id.Arn, ":")[1]
	topic := fmt.Sprintf("arn:%s:sns:%s:%s:%s-build-events.fifo", partition, awsRegion, id.Account, w.prefix)

	var q struct{ QueueUrl string }
	w.cliJSON(&q, "sqs", "create-queue", "--queue-name", name, "--attributes", "FifoQueue=true,ContentBasedDeduplication=false")
	var attrs struct{ Attributes map[string]string }
	w.cliJSON(&attrs, "sqs", "get-queue-attributes", "--queue-url", q.QueueUrl, "--attribute-names", "QueueArn")
	queueARN := attrs.Attributes["QueueArn"]
	policy, err := json.Marshal(map[string]string{"Policy": fmt.Sprintf(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"%s","Condition":{"ArnEquals":{"aws:SourceArn":"%s"}}}]}`,
		queueARN, topic)})
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.cli("sqs", "set-queue-attributes", "--queue-url", q.QueueUrl, "--attributes", string(policy)); err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.cli("sns", "subscribe", "--topic-arn", topic, "--protocol", "sqs", "--notification-endpoint", queueARN,
		"--attributes", "RawMessageDelivery=true"); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { w.cli("sqs", "delete-queue", "--queue-url", q.QueueUrl) })
	return q.QueueUrl
}

// receiveAndDelete receives what the queue holds (up to 10, waiting up to
// 2 s) and deletes it, returning the bodies in the order received.
func (w *awsWorld) receiveAndDelete(url string) ([]string, error) {
	out, err := w.cli("sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "10", "--wait-time-seconds", "2")
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return nil, err
	}
	var ans struct {
		Messages []struct{ Body, ReceiptHandle string }
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return nil, fmt.Errorf("decode received messages %q: %w", out, err)
	}
	var bodies []string
	for _, m := range ans.Messages {
		bodies = append(bodies, m.Body)
		if _, err := w.cli("sqs", "delete-message", "--queue-url", url, "--receipt-handle", m.ReceiptHandle); err != nil {
			return bodies, err
		}
	}
	return bodies, nil
}
