//go:build !decap_embedded

package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/awsevents"
	"github.com/decap-ci/decap/internal/awss3"
	"github.com/decap-ci/decap/internal/awssecrets"
	"github.com/decap-ci/decap/internal/awssqs"
	"github.com/decap-ci/decap/internal/build"
)

// dynamoAttemptTimeout bounds one attempt of a DynamoDB call, from
// connecting to reading the whole answer: generous for a single-item
// call, and for an emulator on a busy machine.
const dynamoAttemptTimeout = 10 * time.Second

// openAWS wires SQS, DynamoDB, S3 and SNS from the standard AWS
// configuration (AWS_REGION, AWS_PROFILE, credentials chain,
// AWS_ENDPOINT_URL for emulators). Resources are named by the prefix, as
// aws-resources/create-world.sh creates them. Every service keeps the
// build events of its record changes in the records' items (the outbox,
// awsdynamo WithEvents) and forwards them to the SNS FIFO topic
// (RunEvents); Decap's consumers read their groups' SQS queues, and the
// live tail a queue of its process's own (awsevents.Stream).
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
	records := awsdynamo.NewRecords(ddb, tables.Builds).WithEvents()
	s.Records, s.Outbox = records, records.Outbox()
	s.Gate = awsdynamo.NewGate(ddb, tables.Locks)
	s.Sessions = awsdynamo.NewSessions(ddb, tables.Sessions, now)
	s.Webhooks = awsdynamo.NewWebhooks(ddb, tables.Builds, now)
	s.Pulls = awsdynamo.NewPullRequests(ddb, tables.Builds)
	s.Blobs = blobs

	topic, err := eventsTopicARN(rctx, sts.NewFromConfig(cfg), cfg.Region, s.cfg.Prefix)
	if err != nil {
		return err
	}
	snsClient := sns.NewFromConfig(cfg)
	pub, err := awsevents.NewPublisher(snsClient, topic)
	if err != nil {
		return err
	}
	s.eventsPub, s.eventsTopic = pub, awsevents.Topic
	// The live tail (GET /api/v1/events, ingest only) makes a queue of
	// this process's own when a client first listens; Close deletes it.
	stream := awsevents.NewStream(sqsClient, s.cfg.Prefix, awsevents.StreamOptions{Logger: s.log,
		Tail: &awsevents.TailConfig{SNS: snsClient, SQS: sqsClient, TopicARN: topic}})
	s.Events = stream
	s.closers = append(s.closers, stream.Close)

	// Builds get presigned PUT URLs for exactly their own objects (the
	// log, its line times, the artifacts), never the services'
	// credentials.
	s.uploads = func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error) {
		urls := map[string]string{}
		for _, key := range []string{build.LogKey(id), build.LogTimesKey(id), build.ArtifactsKey(id)} {
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

// openAWSSecrets opens the builds' secrets in Secrets Manager.
func (s *Set) openAWSSecrets() (build.Secrets, error) {
	return awssecrets.New(secretsmanager.NewFromConfig(*s.awsConfig), s.cfg.Prefix)
}

// eventsTopicARN returns the ARN of the build events' topic of prefix in
// the account of the credentials (sts:GetCallerIdentity, which needs no
// permission), without asking SNS: the services may publish to the topic
// and nothing else.
func eventsTopicARN(ctx context.Context, client *sts.Client, region, prefix string) (string, error) {
	id, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", fmt.Errorf("find the AWS account (sts get-caller-identity): %w", err)
	}
	account, arn := aws.ToString(id.Account), aws.ToString(id.Arn)
	parts := strings.SplitN(arn, ":", 3)
	if account == "" || len(parts) < 3 || parts[1] == "" {
		return "", fmt.Errorf("find the AWS account: sts get-caller-identity answered account %q, ARN %q", account, arn)
	}
	return awsevents.TopicARN(parts[1], region, account, prefix), nil
}
