package awssqs

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/decap-ci/decap/internal/build"
)

// sentinelFor returns the build sentinel that an SQS error code stands for,
// or nil.
//
//   - A receipt handle that is malformed, expired (FIFO queues reject those
//     with InvalidParameterValue "...ReceiptHandle is invalid. Reason: The
//     receipt handle has expired.") or whose message is not in flight:
//     build.ErrNotFound, the port's "stale receipt".
//   - Throttling and server-side failures: build.ErrUnavailable.
//   - Other rejected parameters: build.ErrInvalid.
func sentinelFor(code, message string) error {
	switch code {
	case "ReceiptHandleIsInvalid", "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
		"MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight":
		return build.ErrNotFound
	case "InvalidParameterValue", "InvalidParameterValueException":
		if strings.Contains(strings.ToLower(message), "receipthandle") || strings.Contains(strings.ToLower(message), "receipt handle") {
			return build.ErrNotFound
		}
		return build.ErrInvalid
	case "RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled",
		"ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout",
		"AWS.SimpleQueueService.ServiceUnavailable", "AWS.SimpleQueueService.InternalError":
		return build.ErrUnavailable
	case "InvalidMessageContents", "MissingParameter", "InvalidAttributeValue",
		"InvalidAttributeName", "InvalidParameterCombination":
		return build.ErrInvalid
	}
	return nil
}

// classify returns err wrapped with the build sentinel it stands for, if
// any: see sentinelFor; also any 5xx or 429 answer and any failure to reach
// SQS at all are build.ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if s := sentinelFor(apiErr.ErrorCode(), apiErr.ErrorMessage()); s != nil {
			return fmt.Errorf("%w: %w", s, err)
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

// entryError turns one failed entry of a batch request into an error.
// Without a known code, a failure that SQS does not blame on the sender is
// build.ErrUnavailable and one it does build.ErrInvalid.
func entryError(code, message string, senderFault bool) error {
	s := sentinelFor(code, message)
	if s == nil {
		s = build.ErrInvalid
		if !senderFault {
			s = build.ErrUnavailable
		}
	}
	return fmt.Errorf("%w: %s: %s", s, code, message)
}

// staleAttempt reports whether err is SQS refusing a receive's attempt ID
// ("Value … for parameter ReceiveRequestAttemptId is invalid. Reason: The
// receiveRequestAttemptId is not valid anymore since the receive call is
// not retryable").
func staleAttempt(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "InvalidParameterValue") &&
		strings.Contains(ae.ErrorMessage(), "ReceiveRequestAttemptId")
}
