package cli

import (
	"encoding/json"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row writes one row; tabs and newlines in cells become spaces so they
// cannot break the columns.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = strings.Join(strings.Fields(c), " ")
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	io.WriteString(t.tw, strings.Join(cells, "\t")+"\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// fmtTime shows a time in the local zone, "" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// fmtDur shows a duration to the second, "" for none.
func fmtDur(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// short cuts s to n characters.
func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// decodes reports whether raw decodes into v.
func decodes(raw []byte, v any) bool { return json.Unmarshal(raw, v) == nil }

// hasKey reports whether raw is a JSON object with the key.
func hasKey(raw []byte, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[key]
	return ok
}
