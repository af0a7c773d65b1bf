// Package awssecrets stores the secrets of builds in AWS Secrets Manager,
// behind the same Secrets port (buildtest.Secrets) that localfs.Secrets
// serves on one machine. Each secret is one Secrets Manager secret named
// <prefix>/<team>/<project>/<NAME>, its value kept as SecretBinary (any
// bytes) and its size in the description, so that listing reads no value.
//
// Least privilege is the IAM policies' (aws-resources/policies): ingest
// may create, update, describe, list and delete these secrets, never read a
// value; only the dispatcher may read values (GetSecretValue); the reaper
// may do nothing with them.
package awssecrets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/decap-ci/decap/internal/build"
)

// Limits of Secrets Manager that Decap's names and values must keep to
// (AWS Secrets Manager API reference, CreateSecret): a name of at most 512
// characters of letters, digits and /_+=.@-; a SecretBinary of 1 to 65,536
// bytes. moto does not check them all, so the adapter does.
const (
	MaxNameLen   = 512
	MaxValueSize = 65536
)

// The port's bound must be one Secrets Manager takes.
var _ = [1]int{}[max(0, build.MaxSecretSize-MaxValueSize)]

// api lists the Secrets Manager calls Secrets makes;
// *secretsmanager.Client implements it.
type api interface {
	CreateSecret(ctx context.Context, in *secretsmanager.CreateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error)
	UpdateSecret(ctx context.Context, in *secretsmanager.UpdateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretOutput, error)
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
	DeleteSecret(ctx context.Context, in *secretsmanager.DeleteSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DeleteSecretOutput, error)
	ListSecrets(ctx context.Context, in *secretsmanager.ListSecretsInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretsOutput, error)
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Secrets is build.Secrets on Secrets Manager. It is safe for concurrent
// use.
type Secrets struct {
	client api
	prefix string
	// recreateWait is how long Put keeps trying to create a secret whose
	// name AWS still holds for a deletion in progress.
	recreateWait time.Duration
}

// New returns the secrets stored under prefix (DECAP_PREFIX), which must
// be a name component of letters, digits and '-'.
func New(client api, prefix string) (*Secrets, error) {
	if prefix == "" || strings.ContainsFunc(prefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) || len(prefix) > 64 {
		return nil, fmt.Errorf("%w: secrets prefix %q must be 1 to 64 letters, digits and '-'", build.ErrInvalid, prefix)
	}
	return &Secrets{client: client, prefix: prefix, recreateWait: 10 * time.Second}, nil
}

// Name returns the Secrets Manager name of a secret:
// <prefix>/<team>/<project>/<NAME>.
func (s *Secrets) Name(team, project, name string) string {
	return s.prefix + "/" + team + "/" + project + "/" + name
}

func (s *Secrets) checkedName(team, project, name string) (string, error) {
	if err := build.ValidateSecretKey(team, project, name); err != nil {
		return "", err
	}
	full := s.Name(team, project, name)
	if len(full) > MaxNameLen {
		return "", fmt.Errorf("%w: secret name %s is longer than Secrets Manager's %d characters", build.ErrInvalid, name, MaxNameLen)
	}
	return full, nil
}

// description holds the value's size, so that List needs no value.
func description(size int) string {
	return "Decap build secret: " + strconv.Itoa(size) + " bytes"
}

func sizeOf(desc string) int {
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(desc, "Decap build secret: "), " bytes"))
	if err != nil || n < 0 {
		return 0 // made outside Decap: size unknown
	}
	return n
}

// Put updates the secret's value, or creates the secret. A name whose
// deletion AWS is still carrying out is tried again for a few seconds.
func (s *Secrets) Put(ctx context.Context, team, project, name string, value []byte) error {
	full, err := s.checkedName(team, project, name)
	if err != nil {
		return fmt.Errorf("put secret: %w", err)
	}
	if err := build.ValidateSecretValue(value); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	desc := description(len(value))
	deadline := time.Now().Add(s.recreateWait)
	for {
		_, err = s.client.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{
			SecretId: aws.String(full), SecretBinary: value, Description: aws.String(desc),
		})
		if !isCode(err, "ResourceNotFoundException") {
			break
		}
		_, err = s.client.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
			Name: aws.String(full), SecretBinary: value, Description: aws.String(desc),
		})
		if isCode(err, "ResourceExistsException") {
			continue // created meanwhile by another Put: update it
		}
		if !isCode(err, "InvalidRequestException") || !strings.Contains(errorMessage(err), "scheduled for deletion") || time.Now().After(deadline) {
			break
		}
		// Deleted a moment ago: AWS finishes a deletion without
		// recovery asynchronously.
		select {
		case <-ctx.Done():
			return fmt.Errorf("put secret %s: %w", name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("put secret %s: %w", name, classify(err))
	}
	return nil
}

// Delete deletes the secret at once, without AWS's recovery window, so
// that its name may be written again.
func (s *Secrets) Delete(ctx context.Context, team, project, name string) error {
	full, err := s.checkedName(team, project, name)
	if err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	// moto deletes a missing secret without an error; AWS does not. Ask
	// first, so both say not found.
	if _, err := s.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(full)}); err != nil {
		return fmt.Errorf("delete secret %s: %w", name, classify(err))
	}
	_, err = s.client.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{
		SecretId: aws.String(full), ForceDeleteWithoutRecovery: aws.Bool(true),
	})
	if err != nil {
		return fmt.Errorf("delete secret %s: %w", name, classify(err))
	}
	return nil
}

// List lists the project's secrets. Secrets Manager's name filter is a
// prefix match that ignores case, so the answers are filtered again here
// for exactly this team and project.
func (s *Secrets) List(ctx context.Context, team, project string) ([]build.SecretInfo, error) {
	if err := build.ValidateProject(team, project); err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	prefix := s.Name(team, project, "")
	in := &secretsmanager.ListSecretsInput{
		MaxResults: aws.Int32(100),
		Filters:    []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{prefix}}},
	}
	var out []build.SecretInfo
	for pages := 0; ; pages++ {
		if pages > build.MaxProjectSecrets { // a bound whatever the server answers
			return nil, fmt.Errorf("list secrets: more than %d pages", build.MaxProjectSecrets)
		}
		res, err := s.client.ListSecrets(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list secrets: %w", classify(err))
		}
		for _, e := range res.SecretList {
			name, ok := strings.CutPrefix(aws.ToString(e.Name), prefix)
			if !ok || build.ValidateSecretName(name) != nil || e.DeletedDate != nil {
				continue
			}
			at := aws.ToTime(e.LastChangedDate)
			if at.IsZero() {
				at = aws.ToTime(e.CreatedDate)
			}
			out = append(out, build.SecretInfo{Name: name, Size: sizeOf(aws.ToString(e.Description)), UpdatedAt: at.UTC()})
		}
		if aws.ToString(res.NextToken) == "" {
			break
		}
		in.NextToken = res.NextToken
	}
	slices.SortFunc(out, func(a, b build.SecretInfo) int { return strings.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b build.SecretInfo) bool { return a.Name == b.Name }), nil
}

// Reveal reads the values of names, one GetSecretValue each (a build wants
// at most build.MaxBuildSecrets).
func (s *Secrets) Reveal(ctx context.Context, team, project string, names []string) (map[string][]byte, error) {
	fulls := make([]string, len(names))
	for i, name := range names {
		full, err := s.checkedName(team, project, name)
		if err != nil {
			return nil, fmt.Errorf("reveal secrets: %w", err)
		}
		fulls[i] = full
	}
	out := map[string][]byte{}
	for i, name := range names {
		res, err := s.client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(fulls[i])})
		if isCode(err, "ResourceNotFoundException") {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reveal secret %s: %w", name, classify(err))
		}
		switch {
		case res.SecretBinary != nil:
			out[name] = res.SecretBinary
		case res.SecretString != nil: // written outside Decap, as text
			out[name] = []byte(*res.SecretString)
		}
	}
	return out, nil
}

func isCode(err error, code string) bool {
	var api smithy.APIError
	return err != nil && errors.As(err, &api) && api.ErrorCode() == code
}

func errorMessage(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorMessage()
	}
	return ""
}

// classify maps Secrets Manager's errors onto the build sentinels.
func classify(err error) error {
	var api smithy.APIError
	switch {
	case err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &api) && api.ErrorCode() == "ResourceNotFoundException":
		return fmt.Errorf("%w: %s", build.ErrNotFound, api.ErrorMessage())
	case errors.As(err, &api) && (api.ErrorCode() == "InvalidParameterException" || api.ErrorCode() == "LimitExceededException"):
		return fmt.Errorf("%w: %w", build.ErrInvalid, err)
	case errors.As(err, &api) && api.ErrorCode() == "InvalidRequestException":
		// A secret scheduled for deletion outside Decap, for one.
		return fmt.Errorf("%w: %w", build.ErrConflict, err)
	}
	var status interface{ HTTPStatusCode() int }
	var send interface{ ConnectionError() bool }
	var netErr net.Error
	if errors.As(err, &status) && status.HTTPStatusCode() >= 500 || errors.As(err, &send) && send.ConnectionError() || errors.As(err, &netErr) {
		return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
	}
	return err
}
