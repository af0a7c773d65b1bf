package awssqs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// noWait makes a ReceiveMessage call a short poll even on a queue whose
// ReceiveMessageWaitTimeSeconds attribute asks for long polling (as
// aws-resources/create-world.sh sets it). The SDK leaves a zero
// WaitTimeSeconds out of the request, and SQS then applies the queue's
// default; this writes the 0 into the JSON body after serialization.
func noWait(o *sqs.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		return stack.Serialize.Add(zeroWaitTime{}, middleware.After)
	})
}

type zeroWaitTime struct{}

func (zeroWaitTime) ID() string { return "DecapZeroWaitTimeSeconds" }

func (zeroWaitTime) HandleSerialize(ctx context.Context, in middleware.SerializeInput, next middleware.SerializeHandler) (middleware.SerializeOutput, middleware.Metadata, error) {
	req, ok := in.Request.(*smithyhttp.Request)
	if !ok || req.GetStream() == nil {
		return next.HandleSerialize(ctx, in)
	}
	body, err := io.ReadAll(req.GetStream())
	if err != nil {
		return middleware.SerializeOutput{}, middleware.Metadata{}, fmt.Errorf("read serialized request: %w", err)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		if _, set := fields["WaitTimeSeconds"]; !set {
			fields["WaitTimeSeconds"] = json.RawMessage("0")
			if b, err := json.Marshal(fields); err == nil {
				body = b
			}
		}
	}
	// A body that is not a JSON object (another protocol) goes unchanged.
	if req, err = req.SetStream(bytes.NewReader(body)); err != nil {
		return middleware.SerializeOutput{}, middleware.Metadata{}, fmt.Errorf("rewrite serialized request: %w", err)
	}
	req.ContentLength = int64(len(body))
	in.Request = req
	return next.HandleSerialize(ctx, in)
}
