package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The abuse scenario's fixed shape (DESIGN.md's "Abuse" target); the scale
// sizes how many and how long.
const (
	// abuseSources and followSources are how many loopback addresses the
	// uploads and the followers come from: a flood from many clients,
	// which per-client limits alone do not stop.
	abuseSources  = 50
	followSources = 64
	// abuseRate is the signed webhooks per second, on the idle server and
	// during the abuse, from an address of their own.
	abuseRate = 10
	// ingestMemoryLimit is ingest's memory limit in manifests/ingest.yaml.
	ingestMemoryLimit = 128 << 20
)

// benchAbuse measures what unauthenticated traffic costs the real ingest
// process: AbuseUploads uploads at once, each a webhook that declares 5 MiB
// (a quarter without a signature, the rest with a made-up one), half of
// them sending it all but the last MiB at once and half a byte a second,
// each held until ingest answers or cuts it off and then sent again; and
// AbuseFollowers log follows of a queued build (reads are public, as
// `make run` sets them), refused ones retrying every second as the UI
// does. Meanwhile signed webhooks at abuseRate/s, against the same
// webhooks on the idle server just before; and ingest's peak RSS against
// its manifest's memory limit.
func benchAbuse(ctx context.Context, e *env) (result, error) {
	s := e.scale
	in, err := e.installation("abuse", "DECAP_READ_AUTH=public")
	if err != nil {
		return result{}, err
	}
	defer in.stop()
	addr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	base := "http://" + addr
	ing, err := in.start("ingest", addr) // no dispatcher: builds stay queued
	if err != nil {
		return result{}, err
	}
	pid := ing.cmd.Process.Pid
	time.Sleep(time.Second)
	_, readyRSS, err := procMem(pid)
	if err != nil {
		return result{}, err
	}
	client := newClient(8)
	r := mustRequest(http.MethodPost, base+"/api/v1/projects/"+benchTeam+"/"+benchProject+"/builds", []byte(`{"ref":"abuse"}`))
	r.Header.Set("Authorization", "Bearer "+apiToken)
	r.Header.Set("Content-Type", "application/json")
	a := do(client, r)
	var queued struct{ ID string }
	if a.err != nil || a.status != http.StatusAccepted || json.Unmarshal(a.body, &queued) != nil || queued.ID == "" {
		return result{}, fmt.Errorf("request a build to follow: %d %v %.200s", a.status, a.err, a.body)
	}

	// Signed webhooks from 127.0.0.2, on the idle server, then during the
	// abuse.
	hooks := boundClient("127.0.0.2", 16)
	n := int(abuseRate * s.AbuseFor.Seconds())
	webhooks := func(tag string) (latencies, int) {
		got := openLoop(ctx, hooks, abuseRate, n, 64, func(i int) *http.Request {
			body := distinctPush(e.push, fmt.Sprintf("abuse-%s-%d-%d", tag, time.Now().UnixNano(), i))
			return webhook(base+"/hooks/github", body, sign(body), fmt.Sprintf("abuse-%s-%d", tag, i))
		})
		var l latencies
		bad := 0
		for _, g := range got {
			if g.err != nil || g.status != http.StatusAccepted {
				bad++
				continue
			}
			l = append(l, g.done.Sub(g.scheduled))
		}
		return l, bad
	}
	idle, idleBad := webhooks("idle")
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}

	actx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var peak atomic.Int64
	wg.Go(func() {
		for actx.Err() == nil {
			if _, rss, err := procMem(pid); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	var mu sync.Mutex
	uploads := map[string]int{} // answer → count
	for i := range s.AbuseUploads {
		src := fmt.Sprintf("127.0.2.%d", 1+i%abuseSources)
		wg.Go(func() {
			clientSide()
			for actx.Err() == nil {
				got := abuseUpload(actx, addr, src, i%4 != 0, i%2 == 0)
				mu.Lock()
				uploads[got]++
				mu.Unlock()
			}
		})
	}
	var following, refusedFollows atomic.Int64
	follow := base + "/api/v1/builds/" + queued.ID + "/log?follow=1"
	for i := range s.AbuseFollowers {
		c := boundClient(fmt.Sprintf("127.0.1.%d", 1+i%followSources), 1)
		c.Timeout = 0 // a follow lasts
		wg.Go(func() {
			clientSide()
			for actx.Err() == nil {
				req, _ := http.NewRequestWithContext(actx, http.MethodGet, follow, nil)
				resp, err := c.Do(req)
				if err == nil && resp.StatusCode == http.StatusOK {
					following.Add(1)
					io.Copy(io.Discard, resp.Body) // until the follow ends
					following.Add(-1)
				} else if err == nil {
					refusedFollows.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
				select {
				case <-actx.Done():
				case <-time.After(time.Second):
				}
			}
		})
	}
	time.Sleep(2 * time.Second) // the abuse in full swing
	polls0, t0 := metricSum(client, base+"/metrics", "decap_log_follow_polls_total"), time.Now()
	during, duringBad := webhooks("abuse")
	polls := metricSum(client, base+"/metrics", "decap_log_follow_polls_total") - polls0
	pollWindow := time.Since(t0)
	followersOpen := metricSum(client, base+"/metrics", "decap_log_followers")
	rejected := map[string]float64{}
	for _, reason := range []string{"unsigned", "body_client", "body_server", "body_timeout", "body_too_large", "followers_client", "followers_server"} {
		rejected[reason] = metricValue(client, base+"/metrics", "decap_ingest_rejected_total", `reason="`+reason+`"`)
	}
	stop()
	wg.Wait()
	select {
	case <-ing.done:
		return result{}, fmt.Errorf("ingest exited during the abuse; log:\n%s", tail(ing.log, 2000))
	default:
	}
	hwm, _, err := procMem(pid)
	if err != nil {
		return result{}, err
	}
	if len(idle) == 0 || len(during) == 0 {
		return result{}, fmt.Errorf("no signed webhook was accepted (%d refused on the idle server, %d during the abuse)", idleBad, duringBad)
	}

	res := result{rows: []row{
		{
			what: fmt.Sprintf("ingest peak RSS (VmHWM), %d unsigned 5 MiB uploads (slow or held) from %d addresses and %d log followers from %d",
				s.AbuseUploads, abuseSources, s.AbuseFollowers, followSources),
			figure:   mib(hwm),
			baseline: mib(readyRSS) + " (RSS once ready)",
			ratio:    ratio(float64(hwm), float64(readyRSS)),
			target:   "< 128 MiB (manifests/ingest.yaml)", holds: check(hwm < ingestMemoryLimit),
			command: e.command("abuse"),
		},
		{
			what:     fmt.Sprintf("signed webhook latency during the abuse, %d/s from another address, open loop, %d requests", abuseRate, n),
			figure:   fmt.Sprintf("p50 %s, p99 %s", ms(during.quantile(0.5)), ms(during.quantile(0.99))),
			baseline: fmt.Sprintf("p50 %s, p99 %s (idle server)", ms(idle.quantile(0.5)), ms(idle.quantile(0.99))),
			ratio:    ratio(float64(during.quantile(0.99)), float64(idle.quantile(0.99))) + " (p99)",
			target:   "p99 < 1 s", holds: check(during.quantile(0.99) < time.Second && duringBad == 0),
			command: e.command("abuse"),
		},
	}}
	var b strings.Builder
	fmt.Fprintf(&b, "The real ingest binary on the embedded default, default limits (DECAP_BODY_BUDGET 16 MiB, 10 MiB per client; "+
		"256 followers, 8 per client; read timeout 30 s), DECAP_READ_AUTH=public, no dispatcher (the followed build stays queued). "+
		"The uploads declare 5 MiB: a quarter carry no signature (401 before the body is read), the rest a made-up one; half send "+
		"4 MiB at once and hold the last MiB back, half send a byte a second. Each is sent again as soon as it is answered or cut "+
		"off. The followers retry a refused follow every second.\n\n")
	keys := slices.Sorted(maps.Keys(uploads))
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, uploads[k]))
	}
	fmt.Fprintf(&b, "Answers to the uploads over the run: %s. Refusals counted by ingest (decap_ingest_rejected_total): %s. "+
		"Follows open during the webhooks: %.0f (the cap); refused follow attempts: %d. The followed build's record was read %.0f "+
		"times in %s (one read per 250 ms poll for all its followers: %.0f expected).\n\n",
		strings.Join(parts, ", "), formatRejected(rejected), followersOpen, refusedFollows.Load(), polls, pollWindow.Round(time.Millisecond),
		pollWindow.Seconds()*4)
	if idleBad+duringBad > 0 {
		fmt.Fprintf(&b, "Signed webhooks not answered 202: %d on the idle server, %d during the abuse.\n\n", idleBad, duringBad)
	}
	fmt.Fprintf(&b, "Peak RSS sampled every 20 ms during the abuse: %s; VmHWM at the end: %s.\n", mib(peak.Load()), mib(hwm))
	res.details = append(res.details, b.String())
	return res, nil
}

// metricValue is the value of one series of a metric on a /metrics page,
// the one whose labels contain label (-1 when the page cannot be read).
func metricValue(c *http.Client, url, name, label string) float64 {
	a := do(c, mustRequest(http.MethodGet, url, nil))
	if a.err != nil || a.status != http.StatusOK {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(a.body))
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		if ok && strings.HasPrefix(series, name+"{") && strings.Contains(series, label) {
			var v float64
			fmt.Sscan(value, &v)
			return v
		}
	}
	return 0
}

func formatRejected(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// boundClient is an HTTP client whose connections come from the loopback
// address src, so that ingest tells it apart from other clients.
func boundClient(src string, conns int) *http.Client {
	c := newClient(conns)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

// abuseUpload sends one webhook that declares 5 MiB from src, signed with a
// made-up signature or not at all: all but the last MiB at once, or slow,
// a byte a second. It holds the connection until ingest answers, cuts it
// off or ctx ends, and says which ("429", "cut off", ...).
func abuseUpload(ctx context.Context, addr, src string, signed, slow bool) string {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		return "no connection"
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var h strings.Builder
	fmt.Fprintf(&h, "POST /hooks/github HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"+
		"X-GitHub-Delivery: abuse-%d\r\nContent-Length: %d\r\n", addr, time.Now().UnixNano(), 5<<20)
	if signed {
		fmt.Fprintf(&h, "X-Hub-Signature-256: sha256=%s\r\n", strings.Repeat("0", 64))
	}
	h.WriteString("\r\n")
	go func() {
		if _, err := io.WriteString(conn, h.String()); err != nil {
			return
		}
		if slow {
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				if _, err := conn.Write([]byte{' '}); err != nil {
					return
				}
			}
		}
		chunk := make([]byte, 64<<10)
		for range 64 { // 4 MiB, then hold the last MiB back
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if ctx.Err() != nil {
			return "held to the end"
		}
		return "cut off"
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}
