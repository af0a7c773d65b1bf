package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// awsWorld is one set of AWS resources, made by aws-resources/create-world.sh
// for a prefix of the bench's own on the emulator at AWS_ENDPOINT_URL, and
// destroyed at the end.
type awsWorld struct {
	e        *env
	prefix   string
	endpoint string
	env      []string // of the scripts and the services
}

// world returns the run's AWS resources, creating them on first use; nil
// (and no error) when the run does not use AWS.
func (e *env) world(ctx context.Context) (*awsWorld, error) {
	if !e.useAWS {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.aws == nil && e.awsErr == nil {
		e.aws, e.awsErr = newAWSWorld(ctx, e)
		if e.awsErr != nil {
			e.awsErr = fmt.Errorf("create the AWS resources: %w", e.awsErr)
		}
	}
	return e.aws, e.awsErr
}

// destroyWorld destroys the run's AWS resources, if it made any.
func (e *env) destroyWorld() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.aws != nil {
		e.aws.destroy()
		e.aws = nil
	}
}

func newAWSWorld(ctx context.Context, e *env) (*awsWorld, error) {
	if _, err := exec.LookPath("aws"); err != nil {
		return nil, fmt.Errorf("the AWS CLI (aws) creates the resources and is not on PATH: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	w := &awsWorld{e: e, prefix: "bench-" + hex.EncodeToString(b[:]), endpoint: os.Getenv("AWS_ENDPOINT_URL")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DECAP_") {
			w.env = append(w.env, kv)
		}
	}
	w.env = append(w.env, "DECAP_PREFIX="+w.prefix, "AWS_PAGER=", "CI=true")
	start := time.Now()
	if out, err := w.script(ctx, "create-world.sh"); err != nil {
		w.destroy()
		return nil, fmt.Errorf("create-world.sh: %w\n%s", err, out)
	}
	e.logf("AWS resources %s created on %s in %s", w.prefix, w.endpoint, time.Since(start).Round(time.Second))
	return w, nil
}

// destroy removes the resources; a failure is logged, not returned.
func (w *awsWorld) destroy() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := w.script(ctx, "destroy-world.sh", "--yes"); err != nil {
		w.e.logf("destroy-world.sh for %s: %v\n%s", w.prefix, err, out)
	}
}

func (w *awsWorld) script(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(w.e.root, "aws-resources", name)}, args...)...)
	cmd.Env = w.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
