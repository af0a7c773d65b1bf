package buildtest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecords runs the Records contract. newRecords must return a new, empty
// store. Subtests run in parallel.
func TestRecords(t *testing.T, newRecords func(t *testing.T) Records) {
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

	t.Run("save and get", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		exit := 3
		r := build.Record{
			BuildID:       build.NewID(base),
			Team:          "ae6rt",
			Project:       "dynamodb-lab",
			Ref:           "feature/x",
			RefType:       build.Branch,
			SHA:           "0123456789abcdef0123456789abcdef01234567",
			Trigger:       build.TriggerPush,
			RequestedBy:   "octocat",
			DeliveryID:    "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			Status:        build.StatusFailed,
			ExitCode:      &exit,
			QueuedAt:      base,
			StartedAt:     base.Add(2 * time.Second),
			FinishedAt:    base.Add(92*time.Second + 123456789),
			LogKey:        "logs/x/console.log.gz",
			ArtifactsKey:  "artifacts/x/artifacts.tar.gz",
			PodName:       "build-x",
			CatalogCommit: "abc123",
			Reason:        "exit code 3",
			// Not a combination the services write (a cancel is asked of
			// running builds); every field must round-trip.
			CancelRequestedAt: base.Add(30 * time.Second),
		}
		saveRecord(t, s, r)
		got, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatalf("Get() error = %v", err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("Get() (-want +got):\n%s", diff)
		}
		if _, err := s.Get(t.Context(), build.NewID(base)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Get() of an unknown build error = %v, want ErrNotFound", err)
		}
	})

	t.Run("status rank", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			from, to build.Status
			ok       bool
		}{
			{build.StatusQueued, build.StatusDeferred, true},
			{build.StatusDeferred, build.StatusQueued, true},
			{build.StatusQueued, build.StatusQueued, true},
			{build.StatusQueued, build.StatusRunning, true},
			{build.StatusDeferred, build.StatusExpired, true},
			{build.StatusQueued, build.StatusSkipped, true},
			{build.StatusRunning, build.StatusRunning, true},
			{build.StatusRunning, build.StatusSucceeded, true},
			{build.StatusRunning, build.StatusCancelled, true},
			{build.StatusRunning, build.StatusQueued, false},
			{build.StatusRunning, build.StatusDeferred, false},
			{build.StatusSucceeded, build.StatusFailed, false},
			{build.StatusSucceeded, build.StatusSucceeded, false},
			{build.StatusFailed, build.StatusRunning, false},
			{build.StatusExpired, build.StatusQueued, false},
			{build.StatusSkipped, build.StatusErrored, false},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s to %s", tc.from, tc.to), func(t *testing.T) {
				t.Parallel()
				s := newRecords(t)
				first := newRecord(base, "ae6rt", "p", tc.from)
				saveRecord(t, s, first)
				next := first
				next.Status = tc.to
				next.Reason = "changed"
				err := s.Save(t.Context(), next)
				want := next
				if !tc.ok {
					if !errors.Is(err, build.ErrConflict) {
						t.Fatalf("Save() error = %v, want ErrConflict", err)
					}
					want = first
				} else if err != nil {
					t.Fatalf("Save() error = %v", err)
				}
				got, err := s.Get(t.Context(), first.BuildID)
				if err != nil {
					t.Fatalf("Get() error = %v", err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Get() after Save (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("list project pages newest first", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		var want []build.Record
		for i := range 7 {
			at := base.Add(time.Duration(i) * time.Minute)
			switch i {
			case 3: // the same QueuedAt as build 2: BuildID breaks the tie
				at = base.Add(2 * time.Minute)
			case 5: // saved late but queued first
				at = base.Add(-time.Minute)
			}
			r := newRecord(at, "ae6rt", "p", build.StatusSucceeded)
			saveRecord(t, s, r)
			want = append(want, r)
		}
		saveRecord(t, s, newRecord(base.Add(time.Hour), "ae6rt", "other", build.StatusQueued))
		saveRecord(t, s, newRecord(base.Add(time.Hour), "someone", "p", build.StatusQueued))
		slices.SortFunc(want, func(a, b build.Record) int {
			if c := b.QueuedAt.Compare(a.QueuedAt); c != 0 {
				return c
			}
			if a.BuildID > b.BuildID {
				return -1
			}
			return 1
		})

		for _, limit := range []int{1, 2, 3, 6, 7, 8, 100} {
			t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
				var got []build.Record
				cursor := ""
				for page := 0; ; page++ {
					if page > len(want) {
						t.Fatalf("more than %d pages", len(want))
					}
					recs, next, err := s.ListProject(t.Context(), "ae6rt", "p", limit, cursor)
					if err != nil {
						t.Fatalf("ListProject(page %d) error = %v", page, err)
					}
					if len(recs) > limit {
						t.Fatalf("page %d has %d records, limit %d", page, len(recs), limit)
					}
					if next != "" && len(recs) != limit {
						t.Fatalf("page %d has %d records and next cursor %q; only a full page may have a next page", page, len(recs), next)
					}
					got = append(got, recs...)
					if next == "" {
						break
					}
					cursor = next
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("records over all pages (-want +got):\n%s", diff)
				}
			})
		}
		t.Run("last full page has no next cursor", func(t *testing.T) {
			recs, next, err := s.ListProject(t.Context(), "ae6rt", "p", len(want), "")
			if err != nil || len(recs) != len(want) || next != "" {
				t.Errorf("ListProject(limit %d) = %d records, cursor %q, error %v; want %d, \"\", nil", len(want), len(recs), next, err, len(want))
			}
		})
		t.Run("unknown project", func(t *testing.T) {
			recs, next, err := s.ListProject(t.Context(), "nobody", "p", 10, "")
			if err != nil || len(recs) != 0 || next != "" {
				t.Errorf("ListProject() = %d records, cursor %q, error %v; want none", len(recs), next, err)
			}
		})
	})

	t.Run("running", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		var want []build.Record
		for i, st := range []build.Status{build.StatusQueued, build.StatusRunning, build.StatusSucceeded, build.StatusRunning, build.StatusDeferred} {
			r := newRecord(base.Add(time.Duration(i)*time.Second), "ae6rt", fmt.Sprintf("p%d", i), st)
			saveRecord(t, s, r)
			if st == build.StatusRunning {
				want = append(want, r)
			}
		}
		// A running build that ends is no longer running.
		done := want[0]
		done.Status = build.StatusSucceeded
		saveRecord(t, s, done)
		want = want[1:]

		got, err := s.Running(t.Context())
		if err != nil {
			t.Fatalf("Running() error = %v", err)
		}
		byID := func(a, b build.Record) int {
			if a.BuildID < b.BuildID {
				return -1
			}
			return 1
		}
		slices.SortFunc(got, byID)
		slices.SortFunc(want, byID)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Running() (-want +got):\n%s", diff)
		}
	})

	t.Run("waiting", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		got, err := s.Waiting(t.Context())
		if err != nil || len(got) != 0 {
			t.Fatalf("Waiting() of an empty store = %v, %v; want none", got, err)
		}
		cases := []struct {
			at     time.Duration // QueuedAt after base
			status build.Status
		}{
			{3 * time.Second, build.StatusQueued},
			{time.Second, build.StatusDeferred},
			{2 * time.Second, build.StatusRunning},
			{-time.Second, build.StatusQueued}, // saved late but queued first
			{time.Second, build.StatusQueued},  // the same QueuedAt: BuildID breaks the tie
			{0, build.StatusSucceeded},
			{0, build.StatusExpired},
			{4 * time.Second, build.StatusDeferred},
			{5 * time.Second, build.StatusQueued},
			{6 * time.Second, build.StatusDeferred},
		}
		var recs []build.Record
		for i, c := range cases {
			r := newRecord(base.Add(c.at), "ae6rt", fmt.Sprintf("p%d", i%3), c.status)
			saveRecord(t, s, r)
			recs = append(recs, r)
		}
		// A queued request is deferred: it still waits, as deferred.
		recs[0].Status, recs[0].Reason = build.StatusDeferred, "branch busy"
		saveRecord(t, s, recs[0])
		// Records that leave waiting disappear: one starts, one expires.
		recs[7].Status, recs[7].StartedAt = build.StatusRunning, base.Add(time.Minute)
		saveRecord(t, s, recs[7])
		recs[8].Status, recs[8].Reason = build.StatusExpired, "waited too long"
		saveRecord(t, s, recs[8])

		var want []build.Record
		for _, r := range recs {
			if r.Status == build.StatusQueued || r.Status == build.StatusDeferred {
				want = append(want, r)
			}
		}
		slices.SortFunc(want, func(a, b build.Record) int {
			if c := a.QueuedAt.Compare(b.QueuedAt); c != 0 {
				return c
			}
			if a.BuildID < b.BuildID {
				return -1
			}
			return 1
		})
		if len(want) != 5 {
			t.Fatalf("the test wants 5 waiting records, has %d", len(want))
		}
		got, err = s.Waiting(t.Context())
		if err != nil {
			t.Fatalf("Waiting() error = %v", err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Waiting() (-want +got):\n%s", diff)
		}
	})

	t.Run("average duration", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		builds := []struct {
			status   build.Status
			duration time.Duration
		}{ // oldest first
			{build.StatusSucceeded, 100 * time.Second},
			{build.StatusSucceeded, 10 * time.Second},
			{build.StatusFailed, time.Hour},
			{build.StatusSucceeded, 20 * time.Second},
			{build.StatusTimedOut, time.Hour},
			{build.StatusSucceeded, 30 * time.Second},
			{build.StatusRunning, 0},
		}
		for i, b := range builds {
			r := newRecord(base.Add(time.Duration(i)*time.Minute), "ae6rt", "p", b.status)
			if b.duration > 0 {
				r.StartedAt = r.QueuedAt.Add(time.Second)
				r.FinishedAt = r.StartedAt.Add(b.duration)
			}
			saveRecord(t, s, r)
		}
		other := newRecord(base.Add(time.Hour), "ae6rt", "other", build.StatusSucceeded)
		other.StartedAt, other.FinishedAt = other.QueuedAt, other.QueuedAt.Add(time.Hour)
		saveRecord(t, s, other)

		cases := []struct {
			project string
			n       int
			want    time.Duration
			wantN   int
		}{
			{"p", 1, 30 * time.Second, 1},
			{"p", 3, 20 * time.Second, 3},
			{"p", 4, 40 * time.Second, 4},
			{"p", 10, 40 * time.Second, 4},
			{"nothing", 10, 0, 0},
		}
		for _, tc := range cases {
			got, gotN, err := s.AverageDuration(t.Context(), "ae6rt", tc.project, tc.n)
			if err != nil {
				t.Fatalf("AverageDuration(%s, %d) error = %v", tc.project, tc.n, err)
			}
			if got != tc.want || gotN != tc.wantN {
				t.Errorf("AverageDuration(%s, %d) = %v, %d; want %v, %d", tc.project, tc.n, got, gotN, tc.want, tc.wantN)
			}
		}
	})

	t.Run("projects", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		got, err := s.Projects(t.Context())
		if err != nil || len(got) != 0 {
			t.Fatalf("Projects() of an empty store = %v, %v; want none", got, err)
		}
		for _, k := range [][2]string{{"b", "x"}, {"a", "y"}, {"a-b", "z"}, {"a", "y"}, {"a", "Y"}, {"b", "x"}} {
			saveRecord(t, s, newRecord(base, k[0], k[1], build.StatusQueued))
		}
		got, err = s.Projects(t.Context())
		if err != nil {
			t.Fatalf("Projects() error = %v", err)
		}
		// Sorted as strings: '-' sorts before '/', upper case before lower.
		want := []string{"a-b/z", "a/Y", "a/y", "b/x"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Projects() (-want +got):\n%s", diff)
		}
	})
}

// newRecord returns a record with a fresh build ID queued at at.
func newRecord(at time.Time, team, project string, status build.Status) build.Record {
	return build.Record{
		BuildID:  build.NewID(at),
		Team:     team,
		Project:  project,
		Ref:      "main",
		RefType:  build.Branch,
		Trigger:  build.TriggerManual,
		Status:   status,
		QueuedAt: at,
	}
}

func saveRecord(t *testing.T, s Records, r build.Record) {
	t.Helper()
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatalf("Save(%s, %s) error = %v", r.BuildID, r.Status, err)
	}
}
