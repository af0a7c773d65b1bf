package buildtest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecords runs the Records contract. newRecords must return a new, empty
// store. Subtests run in parallel.
func TestRecords(t *testing.T, newRecords func(t *testing.T) Records) {
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	for name, test := range map[string]func(*testing.T, func(*testing.T) Records){
		"numbers":                TestRecordsNumbers,
		"numbers kept":           TestRecordsNumbersKept,
		"numbers concurrent":     TestRecordsNumbersConcurrent,
		"unfinished":             TestRecordsUnfinished,
		"end waiting":            TestRecordsEndWaiting,
		"supersede races launch": TestRecordsSupersedeRacesLaunch,
		"pull request":           TestRecordsPullRequest,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, newRecords)
		})
	}

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
			Secrets:           []string{"DEPLOY_KEY", "NPM_TOKEN"},
			SecretsWithheld:   "DOCKER_TOKEN is not set",
		}
		saveRecord(t, s, r)
		got, err := s.Get(t.Context(), r.BuildID)
		if err != nil {
			t.Fatalf("Get() error = %v", err)
		}
		if diff := cmp.Diff(r, got, ignoreNumber); diff != "" {
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
				if diff := cmp.Diff(want, got, ignoreNumber); diff != "" {
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
				if diff := cmp.Diff(want, got, ignoreNumber); diff != "" {
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
		if diff := cmp.Diff(want, got, ignoreNumber); diff != "" {
			t.Errorf("Running() (-want +got):\n%s", diff)
		}
	})

	t.Run("waiting", func(t *testing.T) {
		t.Parallel()
		s := newRecords(t)
		got, total, err := s.Waiting(t.Context(), 0, 0)
		if err != nil || len(got) != 0 || total != 0 {
			t.Fatalf("Waiting() of an empty store = %v, %d, %v; want none", got, total, err)
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
		got, total, err = s.Waiting(t.Context(), 0, 0)
		if err != nil || total != len(want) {
			t.Fatalf("Waiting() total = %d, error = %v; want %d", total, err, len(want))
		}
		if diff := cmp.Diff(want, got, ignoreNumber); diff != "" {
			t.Errorf("Waiting() (-want +got):\n%s", diff)
		}
		// Pages: each a slice of the whole list, with the whole count.
		for _, p := range []struct{ offset, limit int }{{0, 2}, {2, 2}, {4, 2}, {1, 3}, {4, 0}, {5, 2}, {9, 1}} {
			got, total, err := s.Waiting(t.Context(), p.offset, p.limit)
			if err != nil || total != len(want) {
				t.Errorf("Waiting(%d, %d) total = %d, error = %v; want %d", p.offset, p.limit, total, err, len(want))
				continue
			}
			if diff := cmp.Diff(build.PageOf(want, p.offset, p.limit), got, ignoreNumber, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Waiting(%d, %d) (-want +got):\n%s", p.offset, p.limit, diff)
			}
		}
		if _, _, err := s.Waiting(t.Context(), -1, 2); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Waiting(-1, 2) error = %v, want ErrInvalid", err)
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

// ignoreNumber leaves Record.Number out of comparisons of records whose
// numbers the store chose: the numbering tests check them.
var ignoreNumber = cmpopts.IgnoreFields(build.Record{}, "Number")

// TestRecordsNumbers checks that Save numbers the records it creates from 1
// in each project (team and project), in the order it creates them, and
// ignores the number the caller gives.
func TestRecordsNumbers(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	saves := []struct {
		team, project string
		want          int
	}{
		{"ae6rt", "p", 1},
		{"ae6rt", "q", 1},
		{"ae6rt", "p", 2},
		{"other", "p", 1},
		{"ae6rt", "p", 3},
		{"ae6rt", "q", 2},
		{"other", "p", 2},
	}
	for i, c := range saves {
		r := newRecord(base.Add(time.Duration(i)*time.Second), c.team, c.project, build.StatusQueued)
		r.Number = 1 // taken as it is, it would repeat a number
		saveRecord(t, s, r)
		if got := getRecord(t, s, r.BuildID).Number; got != c.want {
			t.Errorf("Number of the %s/%s build saved %d. = %d, want %d", c.team, c.project, i+1, got, c.want)
		}
	}
}

// TestRecordsNumbersKept checks that a record keeps its number through every
// later save, whatever number the saved record carries, and through a save
// the store refuses.
func TestRecordsNumbersKept(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	first := newRecord(base, "ae6rt", "p", build.StatusQueued)
	second := newRecord(base.Add(time.Second), "ae6rt", "p", build.StatusQueued)
	saveRecord(t, s, first)
	saveRecord(t, s, second)
	want := map[build.ID]int{first.BuildID: getRecord(t, s, first.BuildID).Number, second.BuildID: getRecord(t, s, second.BuildID).Number}
	if want[first.BuildID] < 1 || want[second.BuildID] <= want[first.BuildID] {
		t.Fatalf("numbers of two new builds = %d, %d; want from 1, increasing", want[first.BuildID], want[second.BuildID])
	}
	check := func(step string) {
		t.Helper()
		for id, n := range want {
			if got := getRecord(t, s, id).Number; got != n {
				t.Errorf("after %s: Number of %s = %d, want %d", step, id, got, n)
			}
		}
	}
	steps := []struct {
		name   string
		change func(r *build.Record)
	}{
		{"the same record saved again (a redelivery)", func(r *build.Record) {}},
		{"deferred, claiming the other build's number", func(r *build.Record) {
			r.Status, r.Reason, r.Number = build.StatusDeferred, "branch busy", want[second.BuildID]
		}},
		{"running, without a number", func(r *build.Record) { r.Status, r.Reason, r.Number = build.StatusRunning, "", 0 }},
		{"succeeded, with a number of its own", func(r *build.Record) { r.Status, r.Number = build.StatusSucceeded, 1000 }},
	}
	r := first
	for _, step := range steps {
		step.change(&r)
		saveRecord(t, s, r)
		check(step.name)
	}
	r.Status = build.StatusQueued
	if err := s.Save(t.Context(), r); !errors.Is(err, build.ErrConflict) {
		t.Fatalf("Save() of a final record as queued error = %v, want ErrConflict", err)
	}
	check("a refused save")
	third := newRecord(base.Add(2*time.Second), "ae6rt", "p", build.StatusQueued)
	saveRecord(t, s, third)
	if got := getRecord(t, s, third.BuildID).Number; got <= want[second.BuildID] {
		t.Errorf("Number of a build created after the saves = %d, want more than %d", got, want[second.BuildID])
	}
}

// TestRecordsNumbersConcurrent checks that builds created at once get
// distinct numbers (see CheckConcurrentNumbers).
func TestRecordsNumbersConcurrent(t *testing.T, newRecords func(t *testing.T) Records) {
	CheckConcurrentNumbers(t, []Records{newRecords(t)})
}

// CheckConcurrentNumbers creates builds of two projects from several
// goroutines at once, through stores that share one backend (ingests and
// dispatchers in several processes), each build saved by two goroutines
// racing (as ingest and a dispatcher may), and checks that every build has
// a number and no two builds of a project share one.
func CheckConcurrentNumbers(t *testing.T, stores []Records) {
	t.Helper()
	const (
		workers   = 8
		perWorker = 6
	)
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	projects := []string{"p", "q"}
	// Workers 2k and 2k+1 save the same builds, through different stores
	// when there are several.
	builds := make([][]build.Record, workers/2)
	for i := range builds {
		for j := range perWorker {
			at := base.Add(time.Duration(i*perWorker+j) * time.Millisecond)
			builds[i] = append(builds[i], newRecord(at, "ae6rt", projects[(i+j)%len(projects)], build.StatusQueued))
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		s := stores[w%len(stores)]
		wg.Go(func() {
			for _, r := range builds[w/2] {
				if err := s.Save(t.Context(), r); err != nil {
					t.Errorf("Save(%s) error = %v", r.BuildID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	owner := map[string]build.ID{} // "project #n" → build
	for _, rs := range builds {
		for _, r := range rs {
			got := getRecord(t, stores[0], r.BuildID)
			if got.Number < 1 {
				t.Errorf("build %s has number %d, want one from 1", r.BuildID, got.Number)
				continue
			}
			k := fmt.Sprintf("%s #%d", got.ProjectKey(), got.Number)
			if other, ok := owner[k]; ok {
				t.Errorf("builds %s and %s are both %s", other, r.BuildID, k)
			}
			owner[k] = r.BuildID
		}
	}
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

func getRecord(t *testing.T, s Records, id build.ID) build.Record {
	t.Helper()
	r, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s) error = %v", id, err)
	}
	return r
}

func saveRecord(t *testing.T, s Records, r build.Record) {
	t.Helper()
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatalf("Save(%s, %s) error = %v", r.BuildID, r.Status, err)
	}
}
