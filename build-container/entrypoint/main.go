// Command decap-entrypoint runs one Decap build: build.sh of the build's
// project, with its console log and artifacts uploaded at the end. It exits
// with the script's exit code (0 when the build succeeded, 125 when Decap
// itself could not run or finish the build).
//
// Local mode, under the embedded default's executor (internal/localexec):
//
//	decap-entrypoint -run-dir DIR [-blobs BLOBDIR] [-handshake [-build-uid N]]
//
// reads DIR/job.json, runs the build in DIR, uploads to the localfs
// directory BLOBDIR (or, without -blobs, to the presigned URLs in
// DIR/uploads.json), and writes DIR/result.json. With -handshake, as the
// local executor starts it, it first does the start-up handshake with the
// launcher over descriptors 3 to 6 (localexec.Handshake): it keeps
// DIR/alive.lock for as long as it lives, and starts nothing before its pid
// is recorded in DIR/pid. The script's HOME and TMPDIR are DIR/home and
// DIR/tmp. With -build-uid, which needs root, the script runs as user and
// group N with no other groups; when it ends, every process of N is killed
// (also what left its process group) and DIR is closed to N before the
// artifacts are read.
//
//	decap-entrypoint -stop-uid N
//
// run as root, kills every process of user N and exits (localexec.StopUID).
//
// Container mode, in a build Pod, takes everything from the environment:
// BUILD_ID, PROJECT_KEY (team/project), BRANCH_TO_BUILD, COMMIT_SHA
// (optional), DECAP_LOG_UPLOAD_URL and DECAP_ARTIFACTS_UPLOAD_URL (presigned
// PUT URLs), and optionally DECAP_LOG_TIMES_UPLOAD_URL (the presigned PUT
// URL of the log's line-time index; without it the log has no times),
// DECAP_BUILD_TIMEOUT (a Go duration),
// DECAP_SCRIPTS_DIR (/build-scripts), DECAP_ARTIFACTS_DIR (/build-artifacts),
// DECAP_WORKSPACE (/workspace), DECAP_SECRETS_DIR (the build's secrets,
// when it was granted any: /run/decap/secrets) and DECAP_RESULT_FILE (/dev/termination-log,
// where Kubernetes picks the result JSON up as the termination message). The
// console log also goes to stdout.
//
// SIGTERM or SIGINT cancels the build; it still uploads what there is.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
	"github.com/decap-ci/decap/internal/harden"
	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/localfs"
)

// exitDecapError is the exit status when Decap, not the script, failed,
// after docker run's 125.
const exitDecapError = 125

func main() {
	harden.Process()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ended buildEnded
		if !errors.As(err, &ended) {
			fmt.Fprintln(os.Stderr, "decap-entrypoint:", err)
			ended.code = exitDecapError
		}
		os.Exit(ended.code)
	}
}

// buildEnded is run's error for a build that did not succeed; code is the
// exit status to end with.
type buildEnded struct {
	code   int
	status build.Status
}

func (e buildEnded) Error() string {
	return fmt.Sprintf("build %s, exit status %d", e.status, e.code)
}

// run runs one build in local mode (with -run-dir) or container mode. It
// returns nil when the build succeeded, a buildEnded when it ended
// otherwise, and any other error when it could not be run at all.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("decap-entrypoint", flag.ContinueOnError)
	flags.SetOutput(stderr)
	runDir := flags.String("run-dir", "", "local mode: the build's directory, holding job.json")
	blobsDir := flags.String("blobs", "", "local mode: the directory logs and artifacts are stored in")
	handshake := flags.Bool("handshake", false, "local mode: started by the local executor, with descriptors 3 to 6 for the start-up handshake")
	buildUID := flags.Int("build-uid", -1, "local mode: run the script as this user and group (needs root)")
	stopUID := flags.Int("stop-uid", -1, "kill every process of this user and exit (needs root)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	if *stopUID >= 0 {
		if flags.NFlag() != 1 {
			return errors.New("-stop-uid takes no other flag")
		}
		return localexec.StopUID(*stopUID)
	}
	if *handshake && *runDir == "" {
		return errors.New("-handshake needs -run-dir")
	}
	if *buildUID >= 0 && !*handshake {
		return errors.New("-build-uid needs -handshake")
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	// The script inherits this process's environment, minus Decap's own
	// settings: the upload URLs are credentials.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DECAP_") {
			env = append(env, kv)
		}
	}
	var res entrypoint.Result
	if *runDir != "" {
		r, err := runLocal(ctx, *runDir, *blobsDir, *handshake, *buildUID, env, logger)
		if err != nil {
			return err
		}
		res = r
	} else {
		r, err := runContainer(ctx, getenv, env, stdout, logger)
		if err != nil {
			return err
		}
		res = r
	}
	switch {
	case res.Status == build.StatusSucceeded:
		return nil
	case res.ExitCode != nil && *res.ExitCode != 0:
		return buildEnded{code: *res.ExitCode, status: res.Status}
	default:
		return buildEnded{code: exitDecapError, status: res.Status}
	}
}

// runLocal runs the build in runDir. With handshake it first does the
// launcher's start-up handshake; main handles SIGTERM by then, so a Cancel,
// which waits for the launch, cancels rather than kills. A buildUID of 0 or
// more is the user the script runs as.
func runLocal(ctx context.Context, runDir, blobsDir string, handshake bool, buildUID int, env []string, logger *slog.Logger) (entrypoint.Result, error) {
	if handshake {
		if err := localexec.Handshake(runDir); err != nil {
			return entrypoint.Result{}, err
		}
	}
	job, err := localexec.ReadJob(runDir)
	if err != nil {
		return entrypoint.Result{}, err
	}
	var uploader entrypoint.Uploader
	if blobsDir != "" {
		blobs, err := localfs.NewBlobs(blobsDir)
		if err != nil {
			return entrypoint.Result{}, err
		}
		uploader = blobs
	} else {
		urls, err := localexec.ReadUploads(runDir)
		if err != nil {
			return entrypoint.Result{}, fmt.Errorf("-blobs not given and no presigned uploads: %w", err)
		}
		uploader = entrypoint.NewHTTPUploader(&http.Client{}, urls, runDir)
	}
	timeout := job.BuildTimeout()
	req := job.Request
	env = append(env, "HOME="+filepath.Join(runDir, localexec.HomeDir), "TMPDIR="+filepath.Join(runDir, localexec.TmpDir))
	var cred *syscall.Credential
	secretsDir := filepath.Join(runDir, localexec.SecretsDir)
	// The secrets go as soon as the script has ended.
	afterScript := func() error { return os.RemoveAll(secretsDir) }
	if buildUID >= 0 {
		// Groups empty, not nil: setgroups(0), no supplementary group.
		cred = &syscall.Credential{Uid: uint32(buildUID), Gid: uint32(buildUID), Groups: []uint32{}}
		env = append(env, "USER=decap", "LOGNAME=decap")
		afterScript = func() error {
			// /proc/self/exe: this very binary, wherever it lies.
			err := localexec.RunStopUID(context.WithoutCancel(ctx), "/proc/self/exe", buildUID)
			// Closed to the build user, whose uid the next build may get.
			return errors.Join(err, os.Chmod(runDir, 0o700), os.RemoveAll(secretsDir))
		}
	}
	res := entrypoint.Run(ctx, entrypoint.Config{
		ScriptsDir:   filepath.Join(runDir, localexec.ScriptsDir),
		Team:         req.Team,
		Project:      req.Project,
		Ref:          req.Ref,
		SHA:          req.SHA,
		PullRequest:  req.PullRequest,
		BuildID:      req.BuildID,
		Workspace:    filepath.Join(runDir, localexec.WorkspaceDir),
		ArtifactsDir: filepath.Join(runDir, localexec.ArtifactsDir),
		SecretsDir:   secretsDir,
		LiveLog:      filepath.Join(runDir, localexec.ConsoleLogFile),
		LiveTimes:    filepath.Join(runDir, localexec.ConsoleTimesFile),
		Timeout:      timeout,
		Uploader:     uploader,
		Env:          env,
		Credential:   cred,
		AfterScript:  afterScript,
		OnStart: func(pid int) {
			if err := localexec.WriteScriptPID(runDir, pid); err != nil {
				// Only a crash of this process needs it.
				logger.Warn("record build script pid", "build_id", string(req.BuildID), "err", err)
			}
		},
		Now:    time.Now,
		Logger: logger,
	})
	if err := localexec.WriteResult(runDir, res); err != nil {
		return res, err
	}
	return res, nil
}

func runContainer(ctx context.Context, getenv func(string) string, env []string, stdout io.Writer, logger *slog.Logger) (entrypoint.Result, error) {
	id := build.ID(getenv("BUILD_ID"))
	team, project, ok := strings.Cut(getenv("PROJECT_KEY"), "/")
	ref := getenv("BRANCH_TO_BUILD")
	if id == "" || !ok || ref == "" {
		return entrypoint.Result{}, errors.New("BUILD_ID, PROJECT_KEY (team/project) and BRANCH_TO_BUILD must be set, or -run-dir given")
	}
	pull, err := build.PullRequestFromEnv(getenv, getenv("COMMIT_SHA"))
	if err != nil {
		return entrypoint.Result{}, fmt.Errorf("the pull request's variables: %w", err)
	}
	logURL, artifactsURL := getenv("DECAP_LOG_UPLOAD_URL"), getenv("DECAP_ARTIFACTS_UPLOAD_URL")
	if logURL == "" || artifactsURL == "" {
		return entrypoint.Result{}, errors.New("DECAP_LOG_UPLOAD_URL and DECAP_ARTIFACTS_UPLOAD_URL must be set")
	}
	var timeout time.Duration
	if s := getenv("DECAP_BUILD_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return entrypoint.Result{}, fmt.Errorf("DECAP_BUILD_TIMEOUT %q is not a positive duration", s)
		}
		timeout = d
	}
	urls := map[string]string{
		build.LogKey(id):       logURL,
		build.ArtifactsKey(id): artifactsURL,
	}
	if u := getenv("DECAP_LOG_TIMES_UPLOAD_URL"); u != "" {
		urls[build.LogTimesKey(id)] = u
	}
	uploader := entrypoint.NewHTTPUploader(&http.Client{}, urls, "")
	res := entrypoint.Run(ctx, entrypoint.Config{
		ScriptsDir:   orDefault(getenv("DECAP_SCRIPTS_DIR"), "/build-scripts"),
		Team:         team,
		Project:      project,
		Ref:          ref,
		SHA:          getenv("COMMIT_SHA"),
		PullRequest:  pull,
		BuildID:      id,
		Workspace:    orDefault(getenv("DECAP_WORKSPACE"), "/workspace"),
		ArtifactsDir: orDefault(getenv("DECAP_ARTIFACTS_DIR"), "/build-artifacts"),
		SecretsDir:   getenv("DECAP_SECRETS_DIR"),
		Stdout:       stdout,
		Timeout:      timeout,
		Uploader:     uploader,
		Env:          env,
		Now:          time.Now,
		Logger:       logger,
	})
	// The termination message is how the reaper learns more than the exit
	// code; without it the build is still recorded, from the exit code.
	path := getenv("DECAP_RESULT_FILE")
	if _, err := os.Stat("/dev/termination-log"); path != "" || err == nil {
		if err := writeResultFile(orDefault(path, "/dev/termination-log"), res); err != nil {
			logger.Warn("write result file", "build_id", string(id), "err", err)
		}
	}
	return res, nil
}

// writeResultFile writes the result's JSON to path. Kubernetes reads at
// most 4096 bytes of a termination message; a result is far smaller.
func writeResultFile(path string, res entrypoint.Result) error {
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
