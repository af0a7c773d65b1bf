package awsdynamo

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// pullsAPI lists the DynamoDB calls PullRequests makes.
type pullsAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

const (
	// pullPrefix starts the buildId of a pull request's item in the
	// builds table: "pull#<team>/<project>/<number>". No build ID (a
	// UUID) starts with it.
	pullPrefix = "pull#"
	// openPullsPrefix starts the kind of an open pull request's item,
	// "pulls#<team>/<project>": the projects index lists a project's
	// open pull requests under it. A closed one has no kind.
	openPullsPrefix = "pulls#"
)

// PullRequests stores what Decap knows of pull requests
// (build.PullRequests) as items of the builds table, beside the build
// records, so that no table or grant is added for them: buildId =
// "pull#<team>/<project>/<number>", version (N), doc (S, the entry as
// JSON), and kind = "pulls#<team>/<project>" while the pull request is
// open (the sparse projects index then lists it). It is safe for
// concurrent use.
type PullRequests struct {
	client pullsAPI
	table  string
}

// NewPullRequests returns the pull requests stored in table, the builds
// table.
func NewPullRequests(client pullsAPI, table string) *PullRequests {
	return &PullRequests{client: client, table: table}
}

func pullKey(team, project string, number int) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrBuildID: str(pullPrefix + build.LockKey(team, project, fmt.Sprint(number)))}
}

// Get returns the pull request's entry; build.ErrNotFound if none. The
// read is strongly consistent: the entry another replica just wrote is
// what a compare-and-swap must start from.
func (s *PullRequests) Get(ctx context.Context, team, project string, number int) (build.PullRequestState, error) {
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            pullKey(team, project, number),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return build.PullRequestState{}, fmt.Errorf("get pull request %s#%d: %w", build.ProjectKey(team, project), number, classify(err))
	}
	if out.Item == nil {
		return build.PullRequestState{}, fmt.Errorf("pull request %s#%d: %w", build.ProjectKey(team, project), number, build.ErrNotFound)
	}
	return decodePull(out.Item)
}

func decodePull(item map[string]types.AttributeValue) (build.PullRequestState, error) {
	doc, ok := item["doc"].(*types.AttributeValueMemberS)
	if !ok {
		return build.PullRequestState{}, fmt.Errorf("decode pull request: item has no doc")
	}
	var p build.PullRequestState
	if err := json.Unmarshal([]byte(doc.Value), &p); err != nil {
		return build.PullRequestState{}, fmt.Errorf("decode pull request: %w", err)
	}
	return p, nil
}

// pullItemFor returns p's item.
func pullItemFor(p build.PullRequestState) (map[string]types.AttributeValue, error) {
	doc, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	item := pullKey(p.Team, p.Project, p.Number)
	item["version"] = num(p.Version)
	item["doc"] = str(string(doc))
	if !p.Closed {
		item[attrKind] = str(openPullsPrefix + build.ProjectKey(p.Team, p.Project))
	}
	return item, nil
}

// Put stores p over version p.Version-1 (or as the first, version 1):
// one conditional put; build.ErrConflict when its condition fails.
func (s *PullRequests) Put(ctx context.Context, p build.PullRequestState) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("put pull request: %w", err)
	}
	item, err := pullItemFor(p)
	if err != nil {
		return fmt.Errorf("put pull request %s: %w", p.LockKey(), err)
	}
	in := &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: item,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld}
	if p.Version == 1 {
		in.ConditionExpression = aws.String("attribute_not_exists(#id)")
		in.ExpressionAttributeNames = map[string]string{"#id": attrBuildID}
	} else {
		in.ConditionExpression = aws.String("#v = :prev")
		in.ExpressionAttributeNames = map[string]string{"#v": "version"}
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":prev": num(p.Version - 1)}
	}
	_, err = s.client.PutItem(ctx, in)
	if old, failed := conditionFailed(err); failed {
		// The SDK retries a put whose answer was lost (a network error,
		// a response that fails its checksum); if the first try landed,
		// the retry's condition fails on this very item.
		if s.landed(ctx, p, item, old) {
			return nil
		}
		return fmt.Errorf("put pull request %s version %d: %w: the stored version is not %d", p.LockKey(), p.Version, build.ErrConflict, p.Version-1)
	}
	if err != nil {
		return fmt.Errorf("put pull request %s: %w", p.LockKey(), classify(err))
	}
	return nil
}

// landed reports whether the stored item (storedItem) is item itself,
// its version and doc.
func (s *PullRequests) landed(ctx context.Context, p build.PullRequestState, item, old map[string]types.AttributeValue) bool {
	stored, err := storedItem(ctx, s.client, s.table, pullKey(p.Team, p.Project, p.Number), old)
	return err == nil && sameVersionAndDoc(stored, item)
}

// ListOpen returns the project's open pull requests by number, read from
// the projects index (eventually consistent: a pull request opened a
// moment ago may be missing).
func (s *PullRequests) ListOpen(ctx context.Context, team, project string) ([]build.PullRequestState, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(indexProjects),
		KeyConditionExpression:    aws.String("#k = :k"),
		ExpressionAttributeNames:  map[string]string{"#k": attrKind},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": str(openPullsPrefix + build.ProjectKey(team, project))},
	}
	var out []build.PullRequestState
	for pages := dynamodb.NewQueryPaginator(s.client, in); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list pull requests of %s: %w", build.ProjectKey(team, project), classify(err))
		}
		for _, item := range page.Items {
			if id, ok := item[attrBuildID].(*types.AttributeValueMemberS); !ok || !strings.HasPrefix(id.Value, pullPrefix) {
				continue
			}
			p, err := decodePull(item)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b build.PullRequestState) int { return a.Number - b.Number })
	return out, nil
}
