package awssqs

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// SQS's rules, written from the API Reference independently of ids.go (moto
// checks none of them):
var (
	// MessageGroupId, MessageDeduplicationId: at most 128 alphanumeric
	// characters and punctuation !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~.
	sqsIDRule = regexp.MustCompile("^[a-zA-Z0-9!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~]{1,128}$")
	// SendMessageBatchRequestEntry Id: up to 80 alphanumeric characters,
	// hyphens and underscores.
	sqsEntryIDRule = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,80}$`)
)

// sqsAcceptsText is the rule of message bodies and String attribute values:
// not empty, only #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
// #x10000-#x10FFFF.
func sqsAcceptsText(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		ok := r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) ||
			(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
		if !ok {
			return false
		}
	}
	return true
}

func TestSQSIDRuleItself(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"ae6rt/p/main": true, strings.Repeat("a", 128): true, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~": true,
		"": false, strings.Repeat("a", 129): false, "a b": false, "fix/umlaut-ü": false, "tab\t": false,
	} {
		if got := sqsIDRule.MatchString(s); got != want {
			t.Errorf("sqsIDRule(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestPublishSendsWhatSQSAccepts publishes requests with plain, long and
// non-ASCII lock keys and checks every field the adapter sends against SQS's
// documented rules: group and deduplication IDs, batch entry IDs, attribute
// values and the body. Plain keys are sent as they are; the others map to
// one stable, distinct group per lock key with a readable prefix.
func TestPublishSendsWhatSQSAccepts(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	dependabot := "dependabot/npm_and_yarn/frontend/packages/web-app/babel/preset-env-and-babel/core-7.26.10"
	tests := []struct {
		name          string
		team, project string
		ref           string
		plain         bool   // sent as the lock key itself
		wantPrefix    string // of a mapped group ID
	}{
		{name: "master", team: "ae6rt", project: "dynamodb-lab", ref: "master", plain: true},
		{name: "feature", team: "ae6rt", project: "dynamodb-lab", ref: "feature/Locks", plain: true},
		{name: "punctuation", team: "a_b.c-d", project: "p", ref: "release/1.2.3+build!#$%&'()=,;<>@]{|}`\"", plain: true},
		{name: "exactly 128", team: "t", project: "p", ref: long(124), plain: true},
		{name: "129", team: "t", project: "p", ref: long(125), wantPrefix: "t/p/" + long(59) + "~"},
		{name: "long repository and dependabot branch", team: "some-organisation-with-a-long-name", project: "a-monorepo-with-an-even-longer-descriptive-name", ref: dependabot,
			wantPrefix: "some-organisation-with-a-long-name/a-monorepo-with-an-even-long~"},
		{name: "longest", team: long(100), project: long(100), ref: long(255), wantPrefix: long(63) + "~"},
		{name: "umlaut", team: "ae6rt", project: "p", ref: "fix/umlaut-ü", wantPrefix: "ae6rt/p/fix/umlaut-_~"},
		{name: "other umlaut", team: "ae6rt", project: "p", ref: "fix/umlaut-ö", wantPrefix: "ae6rt/p/fix/umlaut-_~"},
		{name: "emoji and CJK", team: "ae6rt", project: "p", ref: "feature/🎉-日本", wantPrefix: "ae6rt/p/feature/_-__~"},
		{name: "noncharacter", team: "ae6rt", project: "p", ref: "odd/\uffff\ufffe", wantPrefix: "ae6rt/p/odd/__~"},
	}
	c := &stubClient{}
	q := newStubQueue(t, c)
	groups := map[string]string{} // group ID → lock key
	for _, tt := range tests {
		r := testRequest(tt.ref)
		r.Team, r.Project = tt.team, tt.project
		if err := build.ValidateRef(tt.ref); err != nil {
			t.Fatalf("%s: the test's ref is not valid: %v", tt.name, err)
		}
		// Twice: the group must be the same both times.
		for range 2 {
			if err := q.Publish(t.Context(), r); err != nil {
				t.Fatalf("%s: Publish: %v", tt.name, err)
			}
		}
		sent := c.batches[len(c.batches)-2:]
		e, again := sent[0][0], sent[1][0]
		group := aws.ToString(e.MessageGroupId)
		if aws.ToString(again.MessageGroupId) != group {
			t.Errorf("%s: group ID %q then %q, want one group per lock key", tt.name, group, aws.ToString(again.MessageGroupId))
		}
		if !sqsIDRule.MatchString(group) {
			t.Errorf("%s: MessageGroupId %q (%d bytes) is not what SQS accepts", tt.name, group, len(group))
		}
		if dedup := aws.ToString(e.MessageDeduplicationId); !sqsIDRule.MatchString(dedup) {
			t.Errorf("%s: MessageDeduplicationId %q is not what SQS accepts", tt.name, dedup)
		}
		if id := aws.ToString(e.Id); !sqsEntryIDRule.MatchString(id) {
			t.Errorf("%s: batch entry Id %q is not what SQS accepts", tt.name, id)
		}
		for name, v := range e.MessageAttributes {
			if s := aws.ToString(v.StringValue); aws.ToString(v.DataType) != "String" || !sqsAcceptsText(s) {
				t.Errorf("%s: attribute %s = %s %q is not what SQS accepts", tt.name, name, aws.ToString(v.DataType), s)
			}
		}
		body := aws.ToString(e.MessageBody)
		if !sqsAcceptsText(body) {
			t.Errorf("%s: body %q is not what SQS accepts", tt.name, body)
		}
		got, err := build.Decode([]byte(body))
		if err != nil {
			t.Fatalf("%s: Decode(sent body): %v", tt.name, err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("%s: sent body decodes to another request (-want +got):\n%s", tt.name, diff)
		}
		switch {
		case tt.plain && group != r.LockKey():
			t.Errorf("%s: group ID %q, want the lock key %q as it is", tt.name, group, r.LockKey())
		case !tt.plain && (!strings.HasPrefix(group, tt.wantPrefix) || len(group) != len(tt.wantPrefix)+64):
			t.Errorf("%s: group ID %q, want %q and 64 hex digits", tt.name, group, tt.wantPrefix)
		}
		if other, ok := groups[group]; ok {
			t.Errorf("%s: lock keys %q and %q share group ID %q", tt.name, other, r.LockKey(), group)
		}
		groups[group] = r.LockKey()
	}
}

// A delivery ID is checked by build.Encode already; queueID keeps any other
// within the rules too, and leaves valid ones alone.
func TestQueueIDDedup(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"72d3162e-cc78-11e3-81ab-4c9367dc0958", "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f", strings.Repeat("d", 128)} {
		if got := queueID(id); got != id {
			t.Errorf("queueID(%q) = %q, want it unchanged", id, got)
		}
	}
	for _, id := range []string{strings.Repeat("d", 129), "with space", "ü", "\x00"} {
		if got := queueID(id); !sqsIDRule.MatchString(got) || got == id {
			t.Errorf("queueID(%q) = %q, want a mapped ID SQS accepts", id, got)
		}
	}
}

// deadLetterClient records DeadLetter's SendMessage and accepts its DeleteMessage.
type deadLetterClient struct {
	stubClient
	sent []*sqs.SendMessageInput
}

func (c *deadLetterClient) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	c.sent = append(c.sent, in)
	return &sqs.SendMessageOutput{MessageId: aws.String("dead-1")}, nil
}

func (c *deadLetterClient) DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	return &sqs.DeleteMessageOutput{}, nil
}

// DeadLetter of a hand-made message (no queue checked its group or ID) still
// sends what SQS accepts.
func TestDeadLetterSendsWhatSQSAccepts(t *testing.T) {
	t.Parallel()
	c := &deadLetterClient{}
	q := newStubQueue(t, c)
	m := build.Message{ID: strings.Repeat("i", 200), Receipt: "r", GroupID: "ae6rt/p/fix/umlaut-ü", Body: []byte("not json")}
	if err := q.DeadLetter(t.Context(), m, "bad \x00 reason"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	in := c.sent[0]
	if g, d := aws.ToString(in.MessageGroupId), aws.ToString(in.MessageDeduplicationId); !sqsIDRule.MatchString(g) || !sqsIDRule.MatchString(d) {
		t.Errorf("dead letter group %q, dedup ID %q: not what SQS accepts", g, d)
	}
	for name, v := range in.MessageAttributes {
		if !sqsAcceptsText(aws.ToString(v.StringValue)) {
			t.Errorf("attribute %s = %q is not what SQS accepts", name, aws.ToString(v.StringValue))
		}
	}
}

// sqsQueueName is SQS's rule for queue names (CreateQueue, QueueName),
// written from the API Reference: 1-80 alphanumeric characters, hyphens
// and underscores, a FIFO queue's ending in ".fifo" (counted in the 80).
var sqsQueueName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

func TestCheckQueueName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fifo bool
	}{
		{"decap-builds.fifo", true}, {"decap-builds", false}, {"a_b-C9.fifo", true},
		{strings.Repeat("a", 75) + ".fifo", true}, {strings.Repeat("a", 76) + ".fifo", true},
		{strings.Repeat("a", 80), false}, {strings.Repeat("a", 81), false},
		{"decap-builds", true}, {".fifo", true}, {"", false}, {"decap.builds.fifo", true},
		{"decap builds.fifo", true}, {"décap.fifo", true}, {"decap/builds", false},
	} {
		base, hasSuffix := strings.CutSuffix(tc.name, ".fifo")
		if !tc.fifo {
			base, hasSuffix = tc.name, true
		}
		want := hasSuffix && len(tc.name) <= 80 && sqsQueueName.MatchString(base)
		err := CheckQueueName(tc.name, tc.fifo)
		if (err == nil) != want {
			t.Errorf("CheckQueueName(%q, fifo %v) = %v, want valid %v", tc.name, tc.fifo, err, want)
		}
		if err != nil && !errors.Is(err, build.ErrInvalid) {
			t.Errorf("CheckQueueName(%q) = %v, want ErrInvalid", tc.name, err)
		}
	}
}
