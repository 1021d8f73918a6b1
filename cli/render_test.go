package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		frac float64
		want string
	}{
		{1, "[" + strings.Repeat("=", 50) + ">]"},
		{0, "[>" + strings.Repeat(" ", 50) + "]"},
		{0.5, "[" + strings.Repeat("=", 25) + ">" + strings.Repeat(" ", 25) + "]"},
		{2, "[" + strings.Repeat("=", 50) + ">]"},
	} {
		if got := progressBar(tc.frac); got != tc.want {
			t.Errorf("progressBar(%v) = %q, want %q", tc.frac, got, tc.want)
		}
	}
}

func TestFormatLines(t *testing.T) {
	lines := []progressLine{
		{key: "a", label: "1/10", word: "running", bar: 1},
		{key: "b", label: "10/10", word: "pending", bar: 3.0 / 9, note: "no suitable node (" + strings.Repeat("x", 80) + ")"},
	}
	aligned := formatLines(lines, true)
	if want := "1/10:  running   [" + strings.Repeat("=", 50) + ">]"; aligned[0] != want {
		t.Errorf("aligned[0] = %q, want %q", aligned[0], want)
	}
	// A long note is cut so that a redrawn line does not wrap.
	if !strings.HasPrefix(aligned[1], "10/10: pending   no suitable node (xxx") || !strings.HasSuffix(aligned[1], "…") {
		t.Errorf("aligned[1] = %q", aligned[1])
	}
	plain := formatLines(lines, false)
	if plain[0] != "1/10: running" || !strings.HasSuffix(plain[1], "x)") {
		t.Errorf("plain = %q", plain)
	}
}

func TestLogRendererPrintsChangesOnly(t *testing.T) {
	var b bytes.Buffer
	r := newRenderer(&b, false)
	rep := report{overall: "overall progress: 0 out of 2 tasks", lines: []progressLine{
		{key: "1", label: "1/2", word: "pending", bar: 0.3}, {key: "2", label: "2/2", word: "pending", bar: 0.3},
	}}
	r.draw(rep)
	rep.lines[0].word = "running"
	r.draw(rep)
	r.draw(rep)
	want := "overall progress: 0 out of 2 tasks\n1/2: pending\n2/2: pending\n1/2: running\n"
	if b.String() != want {
		t.Fatalf("log output:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestTTYRendererRedrawsInPlace(t *testing.T) {
	var b bytes.Buffer
	r := newRenderer(&b, true)
	rep := report{overall: "overall progress: 0 out of 1 tasks", lines: []progressLine{{key: "1", label: "1/1", word: "pending", bar: 0}}}
	r.draw(rep)
	first := b.String()
	if strings.Contains(first, "\x1b[") {
		t.Fatalf("first drawing moves the cursor: %q", first)
	}
	r.draw(rep) // unchanged: nothing to draw
	if b.String() != first {
		t.Fatalf("an unchanged report was drawn again: %q", b.String())
	}
	rep.overall = "overall progress: 1 out of 1 tasks"
	rep.lines[0].word, rep.lines[0].bar = "running", 1
	r.draw(rep)
	redraw := strings.TrimPrefix(b.String(), first)
	if !strings.HasPrefix(redraw, "\x1b[2A\x1b[J") || !strings.Contains(redraw, "1/1: running   [") {
		t.Fatalf("redraw = %q, want the cursor moved up over the 2 lines, then the new display", redraw)
	}
}
