package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// bound is how long a test waits for the server to close a connection it
// must close: generous, the timeouts under test are a fraction of it.
const bound = 10 * time.Second

// startServer serves h on a loopback port with the timeouts t until the
// test ends, and returns its address.
func startServer(t *testing.T, h http.Handler, to Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, h, to) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// closedWithin reads conn until the server closes it and returns how long
// that took; it fails the test if the connection is still open after
// bound.
func closedWithin(t *testing.T, conn net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(bound))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", bound)
	}
	return time.Since(start)
}

func TestTimeoutsDefaults(t *testing.T) {
	t.Parallel()
	got := Timeouts{Read: 5 * time.Second}.orDefaults()
	want := Timeouts{ReadHeader: 5 * time.Second, Read: 5 * time.Second, Write: 60 * time.Second, Idle: 75 * time.Second}
	if got != want {
		t.Errorf("orDefaults: got %+v, want %+v (zero fields take the defaults; the header timeout is at most the read timeout)", got, want)
	}
}

// An idle keep-alive connection is closed after Idle, not held for ever.
func TestIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	addr := startServer(t, Handler(nil), Timeouts{Idle: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("got %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	took := closedWithin(t, conn)
	t.Logf("idle connection closed after %s", took)
}

// A body that trickles in is cut off after Read: the handler's read fails
// and the connection is closed, however long the declared body.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			http.Error(w, "slow body", http.StatusRequestTimeout)
		}
	})
	addr := startServer(t, h, Timeouts{Read: 500 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // 1 byte every 100 ms: the whole body would take 100 s
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	})
	took := closedWithin(t, conn)
	close(stop)
	wg.Wait()
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the handler read the whole body; want its read cut off")
		}
	case <-time.After(bound):
		t.Error("the handler's read never ended")
	}
	t.Logf("slow body cut off after %s", took)
}

// Headers that trickle in are cut off after ReadHeader.
func TestSlowHeadersCutOff(t *testing.T) {
	t.Parallel()
	addr := startServer(t, Handler(nil), Timeouts{ReadHeader: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: x\r\n", i); err != nil {
				return
			}
		}
	})
	took := closedWithin(t, conn)
	close(stop)
	wg.Wait()
	t.Logf("slow headers cut off after %s", took)
}

// Write bounds an ordinary answer, and a streaming handler that extends
// its write deadline per chunk outlives it.
func TestWriteTimeoutAndStreams(t *testing.T) {
	t.Parallel()
	const chunks = 8
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		extend := r.URL.Query().Get("extend") == "1"
		for i := range chunks {
			if extend {
				if err := rc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
					t.Errorf("SetWriteDeadline: %v", err)
				}
			}
			if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	addr := startServer(t, h, Timeouts{Write: 300 * time.Millisecond})
	client := &http.Client{Timeout: bound, Transport: &http.Transport{}}
	get := func(extend string) int {
		resp, err := client.Get("http://" + addr + "/?extend=" + extend)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body) // a cut-off stream ends in an error
		return strings.Count(string(b), "\n")
	}
	if got := get("1"); got != chunks {
		t.Errorf("a stream that extends its deadline per chunk: got %d chunks, want all %d", got, chunks)
	}
	if got := get("0"); got >= chunks {
		t.Errorf("a stream that does not extend its deadline: got all %d chunks, want it cut off after the write timeout", got)
	}
}
