package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// endRun is what one trivial local build measured, from the moment its
// push webhook was sent.
type endRun struct {
	final   time.Duration // its record seen final
	started time.Duration // build.sh started (the record's startedAt)
	ran     time.Duration // build.sh ran (finishedAt - startedAt)
	stored  time.Duration // build.sh ended → its log stored (the blob's mtime)
	noticed time.Duration // log stored → record seen final
	status  build.Status
}

// endPoll is how often the bench reads a pending build's record.
const endPoll = 2 * time.Millisecond

// benchEnd measures push → final record of a trivial local build (build.sh
// is "exit 0"): the real binaries on the embedded default, local executor,
// one build at a time, each on a lock key of its own. The bench reads the
// record from the data directory's store every endPoll, as another process
// would. Baseline: the same build.sh run by bash alone, in the same run.
func benchEnd(ctx context.Context, e *env) (result, error) {
	in, err := e.installation("end")
	if err != nil {
		return result{}, err
	}
	defer in.stop()
	ingestAddr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		if _, err := in.start(kind, ingestAddr); err != nil {
			return result{}, err
		}
	}
	rd, err := openStack(ctx, e, "bench-reader", "embedded", in.dataDir)
	if err != nil {
		return result{}, err
	}
	defer rd.close()
	client := newClient(2)
	url := "http://" + ingestAddr + "/hooks/github"
	tag := fmt.Sprintf("end-%d", time.Now().UnixNano())

	one := func(i int) (endRun, error) {
		delivery := fmt.Sprintf("%s-%d", tag, i)
		body := e.pushFor(delivery)
		sent := time.Now()
		a := do(client, webhook(url, body, sign(body), delivery))
		var ans struct {
			Builds []struct{ ID build.ID } `json:"builds"`
		}
		if a.err != nil || a.status != http.StatusAccepted || json.Unmarshal(a.body, &ans) != nil || len(ans.Builds) != 1 {
			return endRun{}, fmt.Errorf("webhook: status %d, %v: %.200s", a.status, a.err, a.body)
		}
		id := ans.Builds[0].ID
		deadline := sent.Add(30 * time.Second)
		for {
			rec, err := rd.set.Records.Get(ctx, id)
			if err == nil && rec.Status.Final() {
				seen := time.Now()
				r := endRun{
					final: seen.Sub(sent), started: rec.StartedAt.Sub(sent), ran: rec.FinishedAt.Sub(rec.StartedAt),
					stored: seen.Sub(rec.FinishedAt), status: rec.Status,
				}
				// The log is the last blob decap-entrypoint stores before
				// its result; its mtime is the last write of it.
				if info, err := os.Stat(filepath.Join(in.dataDir, "blobs", filepath.FromSlash(rec.LogKey))); err == nil && rec.LogKey != "" {
					r.stored, r.noticed = info.ModTime().Sub(rec.FinishedAt), seen.Sub(info.ModTime())
				}
				return r, nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return endRun{}, fmt.Errorf("build %s not final within 30s (last read: %q, %v)", id, rec.Status, err)
			}
			time.Sleep(endPoll)
		}
	}
	// Warm up: the binaries' pages, the store's files. Not measured.
	for i := range 2 {
		if _, err := one(-1 - i); err != nil {
			return result{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var final, started, ran, stored, noticed latencies
	notOK := 0
	for i := range e.scale.EndN {
		r, err := one(i)
		if err != nil {
			return result{}, err
		}
		if r.status != build.StatusSucceeded {
			notOK++
		}
		final, started, ran = append(final, r.final), append(started, r.started), append(ran, r.ran)
		stored, noticed = append(stored, r.stored), append(noticed, r.noticed)
		// The reaper's Remove out of the way, and the next push at a
		// random phase of the reaper's poll.
		time.Sleep(20*time.Millisecond + rand.N(500*time.Millisecond))
	}
	bare, err := bareScript(e, e.scale.EndN)
	if err != nil {
		return result{}, err
	}
	p50 := final.quantile(0.5)
	res := result{rows: []row{{
		what:     fmt.Sprintf("push → final record of a trivial local build (build.sh: exit 0), real binaries, embedded default, %d builds one at a time", len(final)),
		figure:   fmt.Sprintf("p50 %s, p95 %s", ms(p50), ms(final.quantile(0.95))),
		baseline: fmt.Sprintf("p50 %s (bash runs the same build.sh alone)", ms(bare.quantile(0.5))),
		ratio:    ratio(float64(p50), float64(bare.quantile(0.5))) + " (p50)",
		target:   "p50 < 300 ms",
		holds:    check(notOK == 0 && p50 < 300*time.Millisecond),
		command:  e.command("end"),
	}}}
	var b strings.Builder
	fmt.Fprintf(&b, "The real binaries (cmd/ingest, cmd/dispatcher, cmd/reaper, decap-entrypoint) on the embedded default, local executor, "+
		"default settings (DECAP_REAP_INTERVAL 500ms, now the fallback poll). Each signed push goes to a branch of its own and the "+
		"next is sent once the record is final, after 20 ms and a random part of 500 ms, so that pushes fall at any phase of the reaper's poll; the bench reads the record from the store every %s. The record's startedAt and "+
		"finishedAt (build.sh's start and end, as decap-entrypoint saw them) split the time:\n\n", endPoll)
	b.WriteString("| part | p50 | p95 | max |\n|---|---|---|---|\n")
	for _, p := range []struct {
		name string
		l    latencies
	}{
		{"push → build.sh started (ingest, queue, dispatcher, launch, entrypoint start and handshake)", started},
		{"build.sh ran", ran},
		{"build.sh ended → log stored (stop what it left running, drain the log, store artifacts and log)", stored},
		{"log stored → record final (line-time index stored, result.json, entrypoint exit, the reaper learns of it, final record)", noticed},
		{"push → record final", final},
	} {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", p.name, ms(p.l.quantile(0.5)), ms(p.l.quantile(0.95)), ms(p.l.max()))
	}
	if notOK > 0 {
		fmt.Fprintf(&b, "\n%d builds did not end succeeded.\n", notOK)
	}
	res.details = append(res.details, b.String())
	return res, nil
}

// bareScript times n runs of the bench's build.sh by bash alone, from
// fork to exit: the floor under any build.
func bareScript(e *env, n int) (latencies, error) {
	script := filepath.Join(e.scripts, benchTeam, benchProject, "build.sh")
	if _, err := os.Stat(script); err != nil {
		return nil, err
	}
	var out latencies
	for range n {
		start := time.Now()
		if err := exec.Command("bash", script).Run(); err != nil {
			return nil, fmt.Errorf("bash %s: %w", script, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
