package sqlite

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestDocCacheMatchesTheDocument: the cache answers for an id only with
// the document it was given (byte for byte), keeps no document above
// docCacheMaxDoc, forgets the oldest ids beyond docCacheSize, and shares
// nothing with its callers.
func TestDocCacheMatchesTheDocument(t *testing.T) {
	c := newDocCache()
	code := 3
	r := build.Record{BuildID: "b-1", Team: "t", Secrets: []string{"a"}, ExitCode: &code,
		PullRequest: &build.PullRequest{Number: 7}}
	c.put(r.BuildID, []byte(`{"v":1}`), r)
	if _, ok := c.get(r.BuildID, []byte(`{"v":2}`)); ok {
		t.Error("a different document of the id was answered from the cache")
	}
	got, ok := c.get(r.BuildID, []byte(`{"v":1}`))
	if !ok || got.Team != "t" {
		t.Fatalf("the remembered document: %+v, %v", got, ok)
	}
	// Neither the caller's record nor the one returned is the cache's.
	r.Secrets[0], code, r.PullRequest.Number = "changed", 4, 8
	got.Secrets[0], *got.ExitCode, got.PullRequest.Number = "changed", 5, 9
	again, _ := c.get(r.BuildID, []byte(`{"v":1}`))
	if !slices.Equal(again.Secrets, []string{"a"}) || *again.ExitCode != 3 || again.PullRequest.Number != 7 {
		t.Errorf("the cache's record changed with its callers': %+v", again)
	}

	big := make([]byte, docCacheMaxDoc+1)
	c.put(r.BuildID, big, r)
	if _, ok := c.get(r.BuildID, big); ok {
		t.Errorf("a document of %d bytes is remembered, above the %d bound", len(big), docCacheMaxDoc)
	}
	c.put(r.BuildID, []byte(`{"v":1}`), r)

	for i := range docCacheSize {
		c.put(build.ID(fmt.Sprintf("id-%d", i)), []byte("d"), build.Record{})
	}
	if len(c.m) != docCacheSize {
		t.Errorf("%d records remembered, want at most %d", len(c.m), docCacheSize)
	}
	if _, ok := c.get(r.BuildID, []byte(`{"v":1}`)); ok {
		t.Error("the oldest id is still remembered after docCacheSize newer ones")
	}
	if _, ok := c.get(build.ID(fmt.Sprintf("id-%d", docCacheSize-1)), []byte("d")); !ok {
		t.Error("the newest id is forgotten")
	}
}

// TestSaveDecodesWhatAnotherProcessWrote: a save of one process over a
// record another process changed since it last read or wrote it works on
// the record stored, not on the one it remembers: the other's launch
// claim is kept.
func TestSaveDecodesWhatAnotherProcessWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decap.db")
	a, b := NewRecords(openTestDBAt(t, path)), NewRecords(openPlainDBAt(t, path))
	ctx := t.Context()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	r := build.RecordFor(build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: "t", Project: "p",
		Ref: "main", RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now})
	if err := a.Save(ctx, r); err != nil {
		t.Fatal(err)
	}
	read, err := a.Get(ctx, r.BuildID) // a remembers the queued record
	if err != nil {
		t.Fatal(err)
	}
	claimed := read
	if err := claimed.Launching(now.Add(time.Second), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, claimed); err != nil { // the other process claims it
		t.Fatal(err)
	}
	read.Reason = "noted by the first process"
	if err := a.Save(ctx, read); err != nil { // a record without the claim
		t.Fatal(err)
	}
	got, err := b.Get(ctx, r.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.LaunchingAt.Equal(now.Add(time.Second)) || got.Reason != read.Reason {
		t.Errorf("stored: launching at %v, reason %q; want the claim kept (%v) and the reason written", got.LaunchingAt, got.Reason, now.Add(time.Second))
	}
}
