package api_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// filled returns a T whose every field, at every level, holds a value
// that is not its zero value, so that no omitempty hides a field.
func filled[T any]() T {
	var v T
	fill(reflect.ValueOf(&v).Elem(), 1)
	return v
}

func fill(v reflect.Value, n int) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+n%26)))
	case reflect.Int, reflect.Int64, reflect.Int32:
		if v.Type() == reflect.TypeFor[time.Duration]() {
			v.SetInt(int64(time.Duration(n) * time.Second))
			return
		}
		v.SetInt(int64(n))
	case reflect.Float64:
		v.SetFloat(float64(n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n+1)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), n+1)
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 27, 3, 0, n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n+i+1)
			}
		}
	case reflect.Interface:
		v.Set(reflect.ValueOf(map[string]int{"status": n}))
	}
}

// TestBuildIsTheRecordsJSON: a build travels as the JSON of build.Record,
// every field of it, and comes back the same record.
func TestBuildIsTheRecordsJSON(t *testing.T) {
	t.Parallel()
	rec := filled[build.Record]()
	want, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(api.BuildOf(rec))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("JSON of api.BuildOf(r):\n%s\nwant build.Record's:\n%s", got, want)
	}
	if diff := cmp.Diff(rec, api.BuildOf(rec).Record()); diff != "" {
		t.Errorf("BuildOf(r).Record() differs from r (-want +got):\n%s", diff)
	}
	var back api.Build
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, back.Record()); diff != "" {
		t.Errorf("a record decoded as api.Build differs (-want +got):\n%s", diff)
	}
}

func TestBuildsOfIsNeverNil(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(api.BuildPage{Builds: api.BuildsOf(nil)})
	if string(b) != `{"builds":[]}` {
		t.Errorf("an empty page = %s, want {\"builds\":[]}", b)
	}
}

// TestGolden pins the JSON of every wire type, each field set, in
// testdata/<name>.golden.json (-update rewrites them).
func TestGolden(t *testing.T) {
	t.Parallel()
	for name, v := range map[string]any{
		"error":                filled[api.Error](),
		"build":                filled[api.Build](),
		"build-page":           filled[api.BuildPage](),
		"build-list":           filled[api.BuildList](),
		"build-request":        filled[api.BuildRequest](),
		"queued":               filled[api.Queued](),
		"queued-builds":        filled[api.QueuedBuilds](),
		"ignored":              filled[api.Ignored](),
		"pull-waiting":         filled[api.PullWaiting](),
		"pull-closed":          filled[api.PullClosed](),
		"pong":                 filled[api.Pong](),
		"hook-answer":          filled[api.HookAnswer](),
		"refreshed":            filled[api.Refreshed](),
		"cancelling":           filled[api.Cancelling](),
		"queue":                filled[api.Queue](),
		"locks":                filled[api.Locks](),
		"released":             filled[api.Released](),
		"pause":                filled[api.Pause](),
		"teams":                filled[api.Teams](),
		"projects":             filled[api.Projects](),
		"refs":                 filled[api.Refs](),
		"pulls":                filled[api.Pulls](),
		"secrets":              filled[api.Secrets](),
		"secret-change":        filled[api.SecretChange](),
		"session":              filled[api.Session](),
		"status":               filled[api.Status](),
		"subscription-request": filled[api.SubscriptionRequest](),
		"subscription":         filled[api.Subscription](),
		"subscriptions":        filled[api.Subscriptions](),
		"subscription-deleted": filled[api.SubscriptionDeleted](),
		"deliveries":           filled[api.Deliveries](),
		"log-times":            filled[api.LogTimes](),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("JSON of %T:\n%s\nwant (%s):\n%s", v, got, path, want)
			}
			// Each golden decodes into its type and encodes the same.
			back := reflect.New(reflect.TypeOf(v))
			if err := json.Unmarshal(want, back.Interface()); err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			again, _ := json.MarshalIndent(back.Elem().Interface(), "", "  ")
			if !bytes.Equal(append(again, '\n'), want) {
				t.Errorf("%s does not survive a decode and encode:\n%s", path, again)
			}
		})
	}
}
