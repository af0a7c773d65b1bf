package buildtest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// NewSessionsFunc returns a new, empty Sessions that reads time from clock.
type NewSessionsFunc func(t *testing.T, clock *Clock) Sessions

// TestSessions runs the Sessions contract. Subtests run in parallel.
func TestSessions(t *testing.T, newSessions NewSessionsFunc) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, NewSessionsFunc)
	}{
		{"create and get", testSessionsCreateAndGet},
		{"expiry", testSessionsExpiry},
		{"a taken key", testSessionsTakenKey},
		{"delete", testSessionsDelete},
		{"invalid sessions", testSessionsInvalid},
		{"get of malformed keys", testSessionsMalformedKeys},
		{"concurrent creates of one key", testSessionsConcurrentCreates},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newSessions)
		})
	}
}

// newSession returns a session with a key made from id, created now and
// expiring after ttl.
func newSession(clock *Clock, id string, ttl time.Duration) build.Session {
	now := clock.Now()
	return build.Session{Key: build.SessionKey(id), Binding: "binding-of-" + id, CreatedAt: now, ExpiresAt: now.Add(ttl)}
}

func getSession(t *testing.T, s Sessions, key string) (build.Session, error) {
	t.Helper()
	return s.Get(t.Context(), key)
}

func testSessionsCreateAndGet(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	// Times keep their nanoseconds; a binding may hold any text.
	a := newSession(clock, "a", 12*time.Hour+time.Nanosecond)
	a.Binding = strings.Repeat("f", 64)
	b := newSession(clock, "b", time.Minute)
	for _, sess := range []build.Session{a, b} {
		if err := s.Create(t.Context(), sess); err != nil {
			t.Fatalf("Create(%s) error = %v", sess.Key, err)
		}
	}
	for _, want := range []build.Session{a, b} {
		got, err := getSession(t, s, want.Key)
		if err != nil {
			t.Fatalf("Get(%s) error = %v", want.Key, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get(%s) (-want +got):\n%s", want.Key, diff)
		}
	}
	if _, err := getSession(t, s, build.SessionKey("never created")); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() of an unknown key error = %v, want ErrNotFound", err)
	}
	// The store is keyed by the hash: the ID itself finds nothing.
	if _, err := getSession(t, s, "a"); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() by the session ID instead of its key error = %v, want ErrNotFound", err)
	}
}

func testSessionsExpiry(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	const ttl = time.Hour
	sess := newSession(clock, "expiring", ttl)
	if err := s.Create(t.Context(), sess); err != nil {
		t.Fatalf("Create() error = %v", err)
	}
	clock.Advance(ttl - time.Millisecond)
	if _, err := getSession(t, s, sess.Key); err != nil {
		t.Fatalf("Get() just before expiry error = %v", err)
	}
	clock.Advance(time.Millisecond) // now == ExpiresAt: expired
	if _, err := getSession(t, s, sess.Key); !errors.Is(err, build.ErrNotFound) {
		t.Fatalf("Get() at the expiry error = %v, want ErrNotFound", err)
	}
	// An expired session's key may be used again.
	again := newSession(clock, "expiring", ttl)
	again.Binding = "new binding"
	if err := s.Create(t.Context(), again); err != nil {
		t.Fatalf("Create() over an expired session error = %v", err)
	}
	got, err := getSession(t, s, again.Key)
	if err != nil || got.Binding != "new binding" || !got.ExpiresAt.Equal(again.ExpiresAt) {
		t.Errorf("Get() of the new session = %+v, %v; want %+v", got, err, again)
	}
}

func testSessionsTakenKey(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	first := newSession(clock, "taken", time.Hour)
	if err := s.Create(t.Context(), first); err != nil {
		t.Fatalf("Create() error = %v", err)
	}
	second := first
	second.Binding, second.ExpiresAt = "another", first.ExpiresAt.Add(time.Hour)
	if err := s.Create(t.Context(), second); !errors.Is(err, build.ErrConflict) {
		t.Fatalf("Create() of a taken key error = %v, want ErrConflict", err)
	}
	got, err := getSession(t, s, first.Key)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if diff := cmp.Diff(first, got); diff != "" {
		t.Errorf("Get() after a refused Create (-want +got):\n%s", diff)
	}
}

func testSessionsDelete(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	gone, kept := newSession(clock, "gone", time.Hour), newSession(clock, "kept", time.Hour)
	for _, sess := range []build.Session{gone, kept} {
		if err := s.Create(t.Context(), sess); err != nil {
			t.Fatalf("Create() error = %v", err)
		}
	}
	if err := s.Delete(t.Context(), gone.Key); err != nil {
		t.Fatalf("Delete() error = %v", err)
	}
	if _, err := getSession(t, s, gone.Key); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() of a deleted session error = %v, want ErrNotFound", err)
	}
	if _, err := getSession(t, s, kept.Key); err != nil {
		t.Errorf("Get() of the other session error = %v", err)
	}
	for _, key := range []string{gone.Key, build.SessionKey("never created"), "not a key", ""} {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%q) of no session error = %v, want nil", key, err)
		}
	}
}

func testSessionsInvalid(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	valid := newSession(clock, "valid", time.Hour)
	for _, tc := range []struct {
		name   string
		change func(*build.Session)
	}{
		{"empty key", func(s *build.Session) { s.Key = "" }},
		{"the ID instead of its hash", func(s *build.Session) { s.Key = "valid" }},
		{"uppercase hex", func(s *build.Session) { s.Key = strings.ToUpper(s.Key) }},
		{"hash too short", func(s *build.Session) { s.Key = s.Key[:63] }},
		{"expires when created", func(s *build.Session) { s.ExpiresAt = s.CreatedAt }},
		{"expires before created", func(s *build.Session) { s.ExpiresAt = s.CreatedAt.Add(-time.Second) }},
		{"no creation time", func(s *build.Session) { s.CreatedAt = time.Time{} }},
	} {
		sess := valid
		tc.change(&sess)
		if err := s.Create(t.Context(), sess); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("%s: Create() error = %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := getSession(t, s, valid.Key); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() after refused creates error = %v, want ErrNotFound (nothing stored)", err)
	}
}

func testSessionsMalformedKeys(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	for _, key := range []string{"", "x", strings.Repeat("Z", 64), strings.Repeat("a", 65), "'; DROP TABLE sessions; --"} {
		if _, err := getSession(t, s, key); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
		}
	}
}

func testSessionsConcurrentCreates(t *testing.T, newSessions NewSessionsFunc) {
	clock := NewClock(time.Time{})
	s := newSessions(t, clock)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sess := newSession(clock, "contested", time.Hour)
			sess.Binding = string(rune('a' + i))
			errs[i] = s.Create(t.Context(), sess)
		})
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, build.ErrConflict):
			t.Errorf("Create() %d error = %v, want nil or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent creates of one key succeeded, want exactly 1", won)
	}
}
