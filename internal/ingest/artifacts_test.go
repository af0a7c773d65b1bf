package ingest_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

func tarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return buf.Bytes()
}

// A build whose $BUILD_ARTIFACTS was empty stored an empty tarball: it has
// no artifacts to download (404), and HEAD tells the build page so
// without downloading anything.
func TestEmptyArtifacts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	now := f.clock.Now()
	ids := map[string]build.ID{}
	for i, tc := range []struct {
		name string
		blob []byte
	}{
		{"empty", tarball(t, nil)},
		{"full", tarball(t, map[string]string{"dist/app": strings.Repeat("x", 10000)})},
		{"not a tarball", []byte("tarball")},
	} {
		id := build.NewID(now.Add(-time.Duration(i) * time.Second))
		ids[tc.name] = id
		exit := 0
		if err := f.records.Save(ctx, build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerPush, Status: build.StatusSucceeded, ExitCode: &exit, QueuedAt: now, StartedAt: now, FinishedAt: now,
			ArtifactsKey: build.ArtifactsKey(id)}); err != nil {
			t.Fatal(err)
		}
		if err := f.blobs.Put(ctx, build.ArtifactsKey(id), bytes.NewReader(tc.blob)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, build, method string
		code                int
		body                bool
	}{
		{"empty GET", "empty", http.MethodGet, 404, false},
		{"empty HEAD", "empty", http.MethodHead, 404, false},
		{"full GET", "full", http.MethodGet, 200, true},
		{"full HEAD", "full", http.MethodHead, 200, false},
		{"not a tarball GET", "not a tarball", http.MethodGet, 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := f.do(apiRequest(tt.method, "/api/v1/builds/"+string(ids[tt.build])+"/artifacts", token, ""))
			if w.Code != tt.code {
				t.Fatalf("status %d (%.200s), want %d", w.Code, w.Body, tt.code)
			}
			if tt.code == 200 && tt.body {
				want, _ := f.blobs.Open(ctx, build.ArtifactsKey(ids[tt.build]))
				var b bytes.Buffer
				b.ReadFrom(want)
				if !bytes.Equal(w.Body.Bytes(), b.Bytes()) {
					t.Errorf("download differs from the stored tarball (%d bytes, want %d)", w.Body.Len(), b.Len())
				}
			}
			if tt.method == http.MethodHead && w.Body.Len() > 0 {
				t.Errorf("HEAD answered a body of %d bytes", w.Body.Len())
			}
		})
	}
}
