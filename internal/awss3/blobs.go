// Package awss3 stores build logs and artifacts in Amazon S3, behind the same
// Blobs port (buildtest.Blobs) that localfs.Blobs serves on one machine, and
// issues the presigned PUT URLs through which a build Pod, which holds no AWS
// credentials, uploads exactly its own two objects.
//
// Object keys follow build.LogKey and build.ArtifactsKey:
// "logs/<buildId>/console.log.gz" and "artifacts/<buildId>/artifacts.tar.gz".
package awss3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/decap-ci/decap/internal/build"
)

// Sizes and limits.
const (
	// PartSize is the size of each part of a multipart upload, and the
	// most memory one Put holds. An object smaller than PartSize is stored
	// with one PutObject.
	PartSize = 8 << 20
	// MaxObjectSize is the largest object Put stores: S3's 10,000 parts of
	// PartSize.
	MaxObjectSize = maxParts * PartSize
	// MaxKeyLen is S3's limit on an object key.
	MaxKeyLen = build.MaxObjectKeyLen
	// MaxPresignTTL is the longest a presigned URL can be valid (SigV4).
	MaxPresignTTL = 7 * 24 * time.Hour
	// UploadContentType is the Content-Type a presigned PUT requires, as
	// internal/entrypoint's uploader sends it.
	UploadContentType = "application/gzip"

	maxParts = 10000
	// firstRead is how much Put reads before it commits to a part-sized
	// buffer, so small objects (most logs) take little memory.
	firstRead = 64 << 10
	// abortTimeout bounds the cleanup of a failed multipart upload.
	abortTimeout = 30 * time.Second
)

// api lists the S3 calls Blobs makes; *s3.Client implements it.
type api interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(ctx context.Context, in *s3.UploadPartInput, optFns ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
}

// Config configures Blobs.
type Config struct {
	// Bucket holds the objects. Required.
	Bucket string
}

// Blobs stores objects in one S3 bucket (buildtest.Blobs). It is safe for
// concurrent use.
type Blobs struct {
	client  api
	presign *s3.PresignClient
	bucket  string
	// checksum is asked for on multipart uploads: CRC32, as the SDK's
	// transfer manager does, unless the client computes checksums only
	// when required (as for S3 emulators).
	checksum types.ChecksumAlgorithm
}

// New returns the store in cfg.Bucket, reached through client. It takes the
// concrete *s3.Client because presigning needs one. An empty bucket gives
// build.ErrInvalid.
func New(client *s3.Client, cfg Config) (*Blobs, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("%w: bucket is empty", build.ErrInvalid)
	}
	b := &Blobs{client: client, presign: s3.NewPresignClient(client), bucket: cfg.Bucket}
	if client.Options().RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
		b.checksum = types.ChecksumAlgorithmCrc32
	}
	return b, nil
}

// Put stores the content of r under key, replacing any earlier object. It
// streams r without knowing its length: content that fits in PartSize goes
// up with one PutObject, anything longer as a multipart upload of PartSize
// parts, sent one after another, so one Put holds at most PartSize in
// memory. S3 makes the object visible only when complete, so readers see
// the old object or the whole new one. When r or S3 fails, Put aborts the
// multipart upload and the earlier object stays.
//
// An invalid key gives build.ErrInvalid, content over MaxObjectSize
// build.ErrInvalid, an unreachable or throttling S3 build.ErrUnavailable.
func (b *Blobs) Put(ctx context.Context, key string, r io.Reader) error {
	if err := build.ValidateObjectKey(key); err != nil {
		return err
	}
	if err := b.put(ctx, key, r); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func (b *Blobs) put(ctx context.Context, key string, r io.Reader) error {
	buf := make([]byte, firstRead)
	n, err := io.ReadFull(r, buf)
	if err == nil {
		// More than firstRead: read up to a whole part.
		buf = append(buf, make([]byte, PartSize-firstRead)...)
		var m int
		m, err = io.ReadFull(r, buf[n:])
		n += m
	}
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return b.putSmall(ctx, key, buf[:n])
	case err != nil:
		return fmt.Errorf("read content: %w", err)
	}
	return b.putMultipart(ctx, key, r, buf)
}

func (b *Blobs) putSmall(ctx context.Context, key string, data []byte) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(b.bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String(contentType(key)),
	})
	return classify(err)
}

// putMultipart uploads first, a full part, then the rest of r.
func (b *Blobs) putMultipart(ctx context.Context, key string, r io.Reader, part []byte) (err error) {
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:            aws.String(b.bucket),
		Key:               aws.String(key),
		ContentType:       aws.String(contentType(key)),
		ChecksumAlgorithm: b.checksum,
	})
	if err != nil {
		return fmt.Errorf("start multipart upload: %w", classify(err))
	}
	uploadID := created.UploadId
	defer func() {
		if err == nil {
			return
		}
		// Best effort: an upload left behind is invisible to readers and
		// removed by the bucket's lifecycle rule for incomplete uploads.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		_, _ = b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(b.bucket), Key: aws.String(key), UploadId: uploadID,
		})
	}()
	var parts []types.CompletedPart
	n := len(part)
	for num := int32(1); ; num++ {
		if num > maxParts {
			return fmt.Errorf("%w: content is larger than %d bytes", build.ErrInvalid, int64(MaxObjectSize))
		}
		out, err := b.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:            aws.String(b.bucket),
			Key:               aws.String(key),
			UploadId:          uploadID,
			PartNumber:        aws.Int32(num),
			Body:              bytes.NewReader(part[:n]),
			ContentLength:     aws.Int64(int64(n)),
			ChecksumAlgorithm: b.checksum,
		})
		if err != nil {
			return fmt.Errorf("upload part %d: %w", num, classify(err))
		}
		parts = append(parts, types.CompletedPart{
			PartNumber:    aws.Int32(num),
			ETag:          out.ETag,
			ChecksumCRC32: out.ChecksumCRC32,
		})
		if n < len(part) {
			break // a short part is the last
		}
		n, err = io.ReadFull(r, part)
		if errors.Is(err, io.EOF) {
			break // the previous part was the last
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("read content: %w", err)
		}
	}
	_, err = b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(b.bucket),
		Key:             aws.String(key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fmt.Errorf("complete multipart upload: %w", classify(err))
	}
	return nil
}

// contentType is what a stored object is served as.
func contentType(key string) string {
	if strings.HasSuffix(key, ".gz") {
		return "application/gzip"
	}
	return "application/octet-stream"
}

// Open returns the object's content, streamed from S3; the caller closes
// it. No object under key gives build.ErrNotFound, an invalid key
// build.ErrInvalid.
func (b *Blobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return b.OpenRange(ctx, key, 0)
}

// OpenRange returns the object's content from byte offset on, for following
// a log that grows by replacement. An offset at or past the end gives an
// empty reader. No object under key gives build.ErrNotFound, an invalid key
// or a negative offset build.ErrInvalid.
func (b *Blobs) OpenRange(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	if err := build.ValidateObjectKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("open %s: %w: negative offset %d", key, build.ErrInvalid, offset)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		var respErr *smithyhttp.ResponseError
		if offset > 0 && errors.As(err, &respErr) && respErr.HTTPStatusCode() == 416 {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, fmt.Errorf("open %s: %w", key, classify(err))
	}
	return out.Body, nil
}

// PresignPut returns a URL through which one HTTP PUT, carrying
// Content-Type UploadContentType, stores an object under key until ttl
// passes. The URL is a credential: hand it only to the build that owns the
// key, and never log it. An invalid key, or a ttl not in (0,
// MaxPresignTTL], gives build.ErrInvalid. Errors never contain the URL.
func (b *Blobs) PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := build.ValidateObjectKey(key); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxPresignTTL {
		return "", fmt.Errorf("presign put %s: %w: ttl %v is not in (0, %v]", key, build.ErrInvalid, ttl, MaxPresignTTL)
	}
	req, err := b.presign.PresignPutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(b.bucket),
		Key:         aws.String(key),
		ContentType: aws.String(UploadContentType),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("presign put %s: %w", key, err)
	}
	return req.URL, nil
}

// classify wraps err with build.ErrNotFound for a missing object,
// build.ErrUnavailable for throttling, 5xx answers and an unreachable S3.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var noKey *types.NoSuchKey
	var notFound *types.NotFound
	if errors.As(err, &noKey) || errors.As(err, &notFound) {
		return fmt.Errorf("%w: %w", build.ErrNotFound, err)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey":
			return fmt.Errorf("%w: %w", build.ErrNotFound, err)
		case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable":
			return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		if code := respErr.HTTPStatusCode(); code >= 500 || code == 429 {
			return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
		}
		return err
	}
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	if errors.As(err, &sendErr) || errors.As(err, &netErr) {
		return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
	}
	return err
}
