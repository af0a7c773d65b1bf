package proctest_test

import (
	"encoding/json"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

func TestSign(t *testing.T) {
	t.Parallel()
	// GitHub's example in "Validating webhook deliveries".
	got := proctest.Sign("It's a Secret to Everybody", []byte("Hello, World!"))
	want := "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got != want {
		t.Errorf("Sign: got %s, want %s", got, want)
	}
}

func TestRecordString(t *testing.T) {
	t.Parallel()
	three, zero := 3, 0
	tests := []struct {
		name          string
		rec           proctest.Record
		want          string
		wantSucceeded bool
	}{
		{"queued", proctest.Record{Status: "queued"}, "queued", false},
		{"succeeded", proctest.Record{Status: "succeeded", ExitCode: &zero}, "succeeded exit 0", true},
		{"succeeded without exit code", proctest.Record{Status: "succeeded"}, "succeeded", false},
		{"failed", proctest.Record{Status: "failed", ExitCode: &three, Reason: "Error 3"}, "failed exit 3 (Error 3)", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.rec.String(); got != tc.want {
				t.Errorf("String: got %q, want %q", got, tc.want)
			}
			if got := tc.rec.Succeeded(); got != tc.wantSucceeded {
				t.Errorf("Succeeded: got %v, want %v", got, tc.wantSucceeded)
			}
		})
	}
}

func TestPushPayload(t *testing.T) {
	t.Parallel()
	var got struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(proctest.PushPayload("team", "repo", "feature/x"), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ref != "refs/heads/feature/x" || got.Repository.FullName != "team/repo" || len(got.After) != 40 {
		t.Errorf("push payload: got %+v, want ref refs/heads/feature/x of team/repo at a 40-digit commit", got)
	}
}

// TestFreeAddrNeverRepeats: an address FreeAddr handed out is never handed
// out again in the process, although the kernel may offer its port again
// once it is closed (a cluster's ingest address waits unbound while other
// services start).
func TestFreeAddrNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 300 {
		addr := proctest.FreeAddr(t)
		if seen[addr] {
			t.Fatalf("FreeAddr returned %s twice", addr)
		}
		seen[addr] = true
	}
}
