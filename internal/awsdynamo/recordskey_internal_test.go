package awsdynamo

import (
	"regexp"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/decap-ci/decap/internal/build"
)

// TestEndWaitingInputFollowsDynamoDBRules checks EndWaiting's UpdateItem
// against rules moto does not enforce (as TestReplaceInputFollowsDynamoDBRules
// does Save's): every name and value placeholder given is used and every
// one used is given; the number is never written; and that its condition
// names the stored status and launchingAt.
func TestEndWaitingInputFollowsDynamoDBRules(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	r := build.Record{BuildID: build.NewID(base), Number: 3, Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
	if err := r.Supersede(base, build.NewID(base.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	in, err := NewRecords(nil, "builds").endWaitingInput(r, "token")
	if err != nil {
		t.Fatalf("endWaitingInput() error = %v", err)
	}
	update, cond := aws.ToString(in.UpdateExpression), aws.ToString(in.ConditionExpression)
	placeholder := regexp.MustCompile(`[#:][A-Za-z0-9_]+`)
	used := map[string]bool{}
	for _, p := range placeholder.FindAllString(update+" "+cond, -1) {
		used[p] = true
		_, isName := in.ExpressionAttributeNames[p]
		_, isValue := in.ExpressionAttributeValues[p]
		if !isName && !isValue {
			t.Errorf("placeholder %s is used but not given", p)
		}
	}
	for p := range in.ExpressionAttributeNames {
		if !used[p] {
			t.Errorf("name placeholder %s is given but not used", p)
		}
	}
	for p := range in.ExpressionAttributeValues {
		if !used[p] {
			t.Errorf("value placeholder %s is given but not used", p)
		}
	}
	for _, p := range []string{"#status", "#launchingAt", ":queued", ":deferred"} {
		if !regexp.MustCompile(regexp.QuoteMeta(p) + `\b`).MatchString(cond) {
			t.Errorf("condition %q does not use %s", cond, p)
		}
	}
	if _, ok := in.ExpressionAttributeNames["#number"]; ok {
		t.Errorf("the update touches number: %s", update)
	}
}
