package config_test

import (
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/config"
)

func TestLoadBuildIsolation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		vars        map[string]string
		isolation   string
		first, last int
		err         string // a part of the error; "" for none
	}{
		{name: "defaults", isolation: "best-effort"},
		{name: "required", vars: map[string]string{"DECAP_BUILD_ISOLATION": "required"}, isolation: "required"},
		{name: "a range", vars: map[string]string{"DECAP_BUILD_UIDS": "200000-200999"}, isolation: "best-effort", first: 200000, last: 200999},
		{name: "one uid", vars: map[string]string{"DECAP_BUILD_UIDS": "65534"}, isolation: "best-effort", first: 65534, last: 65534},
		{name: "unknown isolation", vars: map[string]string{"DECAP_BUILD_ISOLATION": "off"}, err: "DECAP_BUILD_ISOLATION"},
		{name: "root in the range", vars: map[string]string{"DECAP_BUILD_UIDS": "0-10"}, err: "DECAP_BUILD_UIDS"},
		{name: "reversed range", vars: map[string]string{"DECAP_BUILD_UIDS": "10-5"}, err: "DECAP_BUILD_UIDS"},
		{name: "past 2^31-2", vars: map[string]string{"DECAP_BUILD_UIDS": "2147483000-2147483647"}, err: "DECAP_BUILD_UIDS"},
		{name: "not numbers", vars: map[string]string{"DECAP_BUILD_UIDS": "builds"}, err: "DECAP_BUILD_UIDS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(func(k string) string { return tc.vars[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Load: error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.BuildIsolation != tc.isolation || c.BuildUIDFirst != tc.first || c.BuildUIDLast != tc.last {
				t.Errorf("got isolation %q, uids %d-%d; want %q, %d-%d", c.BuildIsolation, c.BuildUIDFirst, c.BuildUIDLast, tc.isolation, tc.first, tc.last)
			}
		})
	}
}
