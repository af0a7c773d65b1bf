package ingest

import (
	"encoding/xml"
	"strings"
	"testing"
)

// Whatever a badge is given to say, it says it as text: its SVG stays
// well-formed and holds no markup of the caller's.
func TestBadgeSVGEscapes(t *testing.T) {
	t.Parallel()
	hostile := `x"/><script>alert(1)</script><text>&amp;`
	svg := string(badgeSVG(hostile, hostile, `red"/><script>`))
	var doc struct {
		Title string `xml:"title"`
		G     struct {
			Text []string `xml:"text"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("badge is no well-formed SVG: %v\n%s", err, svg)
	}
	if strings.Contains(svg, "<script") {
		t.Errorf("badge holds a script element: %s", svg)
	}
	if len(doc.G.Text) != 2 || doc.G.Text[0] != hostile || doc.G.Text[1] != hostile {
		t.Errorf("badge texts %q, want the label and message as given, as text", doc.G.Text)
	}
	if doc.Title != hostile+": "+hostile {
		t.Errorf("badge title %q", doc.Title)
	}
}
