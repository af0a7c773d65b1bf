package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
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

// TestAWSLiveEventStream: on the aws backend GET /api/v1/events streams
// (it answered 503 before ingest had a tail there): a push's build comes
// as server-sent events queued → started → succeeded, in order, through
// the SQS queue ingest made for its tail; when ingest stops with the
// client listening, the stream ends and that queue is gone.
func TestAWSLiveEventStream(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addTraced("e2e", "app", 200*time.Millisecond)
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	ingest := c.Start("ingest")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.URL("/api/v1/events?project=e2e/app"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Authorize(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /api/v1/events on aws: %s, Content-Type %q; want 200 and an event stream", resp.Status, resp.Header.Get("Content-Type"))
	}
	tails := w.tailQueues()
	if len(tails) != 1 {
		t.Fatalf("ingest's tail queues while a client listens: %v, want one", tails)
	}

	type sse struct{ id, typ, data string }
	got := make(chan sse, 64)
	go func() {
		defer close(got)
		var e sse
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.id != "" {
					got <- e
				}
				e = sse{}
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()

	id := c.Push("e2e", "app", "main")
	var types []string
	last := 0
	deadline := time.After(proctest.BuildTimeout)
	for !slices.Contains(types, "succeeded") {
		select {
		case e, ok := <-got:
			if !ok {
				t.Fatalf("the event stream ended after %v", types)
			}
			var ce struct {
				ID, Type, Subject string
				Version           int `json:"recordversion"`
			}
			if err := json.Unmarshal([]byte(e.data), &ce); err != nil || ce.ID != e.id || ce.Type != e.typ {
				t.Fatalf("server-sent event %+v: want data the CloudEvent of its id and type (%v)", e, err)
			}
			if ce.Subject != id {
				continue
			}
			if ce.Version <= last {
				t.Errorf("event %s (version %d) came after version %d", ce.ID, ce.Version, last)
				continue
			}
			last = ce.Version
			typ := strings.TrimPrefix(ce.Type, "io.decap.build.")
			if len(types) == 0 || types[len(types)-1] != typ { // a launch claim repeats queued
				types = append(types, typ)
			}
		case <-deadline:
			t.Fatalf("build %s's events on the stream after %s: %v, want queued, started, succeeded", id, proctest.BuildTimeout, types)
		}
	}
	if want := []string{"queued", "started", "succeeded"}; !slices.Equal(types, want) {
		t.Errorf("build %s's server-sent events: types %v, want %v in order", id, types, want)
	}

	// Ingest stops with the client still listening (a page left open
	// through a rollout): the stream ends, and the queue goes with it.
	c.Stop(ingest)
	select {
	case <-drained(got):
	case <-time.After(10 * time.Second):
		t.Error("the event stream stayed open 10 s after ingest stopped")
	}
	if left := w.tailQueues(); len(left) > 0 {
		t.Errorf("after ingest stopped its tail queues %v are left, want %v deleted", left, tails)
	}
}

// drained reads c to its end and is then closed.
func drained[T any](c <-chan T) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c {
		}
	}()
	return done
}

// tailQueues returns the names of the world's live-tail queues.
func (w *awsWorld) tailQueues() []string {
	w.t.Helper()
	var list struct{ QueueUrls []string }
	w.cliJSON(&list, "sqs", "list-queues", "--queue-name-prefix", w.prefix+"-tail-")
	var names []string
	for _, u := range list.QueueUrls {
		names = append(names, u[strings.LastIndex(u, "/")+1:])
	}
	return names
}
