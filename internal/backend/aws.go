package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/awss3"
	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
)

// dynamoAttemptTimeout bounds one attempt of a DynamoDB call, from
// connecting to reading the whole answer: generous for a single-item
// call, and for an emulator on a busy machine.
const dynamoAttemptTimeout = 10 * time.Second

// openAWS wires SQS, DynamoDB and S3 from the standard AWS configuration
// (AWS_REGION, AWS_PROFILE, credentials chain, AWS_ENDPOINT_URL for
// emulators). Resources are named by the prefix, as
// aws-resources/create-world.sh creates them.
func (s *Set) openAWS(ctx context.Context, now func() time.Time) error {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return errors.New("AWS region is not set (set AWS_REGION)")
	}
	emulated := os.Getenv("AWS_ENDPOINT_URL") != ""

	sqsClient := sqs.NewFromConfig(cfg)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	queueURL, dlqURL, err := awssqs.ResolveURLs(rctx, sqsClient, s.cfg.Prefix)
	if err != nil {
		return fmt.Errorf("find the build queue (did aws-resources/create-world.sh run with DECAP_PREFIX=%s?): %w", s.cfg.Prefix, err)
	}
	queue, err := awssqs.New(sqsClient, awssqs.Config{QueueURL: queueURL, DLQURL: dlqURL})
	if err != nil {
		return err
	}

	// Each attempt of a DynamoDB call is bounded: a stalled request is
	// retried (every conditional write tolerates a retry of a try that
	// landed, see internal/awsdynamo) rather than holding its caller
	// until the service stops. SQS keeps the SDK's client: its long
	// polls last 20 seconds.
	ddb := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.HTTPClient = awshttp.NewBuildableClient().WithTimeout(dynamoAttemptTimeout)
	})
	tables := awsdynamo.TableNames(s.cfg.Prefix)

	s3Client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if emulated {
			// Emulators serve path-style URLs and want checksums only
			// where S3 requires them.
			o.UsePathStyle = true
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	})
	blobs, err := awss3.New(s3Client, awss3.Config{Bucket: s.cfg.Bucket})
	if err != nil {
		return err
	}

	s.awsConfig = &cfg
	s.Queue = queue
	s.Locks = awsdynamo.NewLocks(ddb, tables.Locks, now)
	s.Idempotency = awsdynamo.NewIdempotency(ddb, tables.Idempotency, now)
	s.Records = awsdynamo.NewRecords(ddb, tables.Builds)
	s.Gate = awsdynamo.NewGate(ddb, tables.Locks)
	s.Sessions = awsdynamo.NewSessions(ddb, tables.Sessions, now)
	s.Webhooks = awsdynamo.NewWebhooks(ddb, tables.Builds, now)
	s.Pulls = awsdynamo.NewPullRequests(ddb, tables.Builds)
	s.Blobs = blobs
	// Builds get presigned PUT URLs for exactly their two objects, never
	// the services' credentials.
	s.uploads = func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error) {
		urls := map[string]string{}
		for _, key := range []string{build.LogKey(id), build.ArtifactsKey(id)} {
			u, err := blobs.PresignPut(ctx, key, ttl)
			if err != nil {
				return nil, err
			}
			urls[key] = u
		}
		return urls, nil
	}
	return nil
}
