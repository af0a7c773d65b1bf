package awssecrets

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
)

// caseBlindList answers ListSecrets as AWS documents its name filter: a
// prefix match that ignores case (moto's does not), in pages of one.
type caseBlindList struct {
	api
	names []string
}

func (c caseBlindList) ListSecrets(_ context.Context, in *secretsmanager.ListSecretsInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretsOutput, error) {
	prefix := strings.ToLower(in.Filters[0].Values[0])
	var matched []types.SecretListEntry
	for _, n := range c.names {
		if strings.HasPrefix(strings.ToLower(n), prefix) {
			matched = append(matched, types.SecretListEntry{Name: aws.String(n), Description: aws.String(description(3)), LastChangedDate: aws.Time(time.Unix(1, 0))})
		}
	}
	start := 0
	if in.NextToken != nil {
		start = len(*in.NextToken)
	}
	out := &secretsmanager.ListSecretsOutput{}
	if start < len(matched) {
		out.SecretList = matched[start : start+1]
		if start+1 < len(matched) {
			out.NextToken = aws.String(strings.Repeat("x", start+1))
		}
	}
	return out, nil
}

// TestListKeepsToItsProject: of what the case-blind filter returns, List
// keeps exactly the project's own secrets, across pages.
func TestListKeepsToItsProject(t *testing.T) {
	t.Parallel()
	s, err := New(caseBlindList{names: []string{
		"decap/ae6rt/lab/A", "decap/AE6RT/lab/B", "decap/ae6rt/LAB/C", "decap/ae6rt/lab/D", "Decap/ae6rt/lab/E",
		"decap/ae6rt/lab/lower", "decap/ae6rt/lab/F/G",
	}}, "decap")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.List(t.Context(), "ae6rt", "lab")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range got {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "A,D" {
		t.Errorf("List() = %q, want [A D]: another project's secrets through the case-blind filter", names)
	}
}
