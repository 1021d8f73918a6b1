package cli

import (
	"fmt"
	"io"
	"strings"
)

// renderer draws progress reports as they come.
type renderer interface {
	draw(rep report)
}

// newRenderer redraws in place on a terminal, and elsewhere (CI logs,
// pipes) prints each line only when it changes, since escape codes would
// be noise there.
func newRenderer(w io.Writer, terminal bool) renderer {
	if terminal {
		return &ttyRenderer{w: w}
	}
	return &logRenderer{w: w, printed: map[string]string{}}
}

// ttyRenderer redraws the whole display over the previous one.
type ttyRenderer struct {
	w     io.Writer
	last  string
	lines int
}

func (r *ttyRenderer) draw(rep report) {
	text := rep.overall + "\n"
	for _, l := range formatLines(rep.lines, true) {
		text += l + "\n"
	}
	if text == r.last {
		return
	}
	if r.lines > 0 {
		// Up to the display's first line, and clear from there down.
		fmt.Fprintf(r.w, "\x1b[%dA\x1b[J", r.lines)
	}
	io.WriteString(r.w, text)
	r.last, r.lines = text, strings.Count(text, "\n")
}

// logRenderer prints the lines that changed since it last printed them.
type logRenderer struct {
	w       io.Writer
	printed map[string]string
}

func (r *logRenderer) draw(rep report) {
	r.print("", rep.overall)
	texts := formatLines(rep.lines, false)
	for i, l := range rep.lines {
		r.print(l.key, texts[i])
	}
}

func (r *logRenderer) print(key, text string) {
	if r.printed[key] == text {
		return
	}
	r.printed[key] = text
	fmt.Fprintln(r.w, text)
}

// barWidth is the width of docker's progress bars.
const barWidth = 50

// progressBar draws docker's bar: [=========>          ].
func progressBar(frac float64) string {
	n := min(max(int(frac*barWidth), 0), barWidth)
	return "[" + strings.Repeat("=", n) + ">" + strings.Repeat(" ", barWidth-n) + "]"
}

// maxNoteLen keeps a redrawn line from wrapping on a usual terminal, which
// would throw the redraw's line count off.
const maxNoteLen = 60

// formatLines turns progress lines into text: "1/5: running   [====>   ]"
// for a slot, "web_app: 3/5 starting  [==>     ]" for a service. Aligned
// output (the terminal's) pads the columns and draws the bars; the log's
// keeps each line short.
func formatLines(lines []progressLine, aligned bool) []string {
	var labelW, countW int
	if aligned {
		for _, l := range lines {
			labelW = max(labelW, len(l.label)+1)
			countW = max(countW, len(l.count))
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		text := fmt.Sprintf("%-*s", labelW, l.label+":")
		if l.count != "" {
			text += fmt.Sprintf(" %*s", countW, l.count)
		}
		note := l.note
		if aligned && len(note) > maxNoteLen {
			note = note[:maxNoteLen-1] + "…"
		}
		switch {
		case note != "":
			text += fmt.Sprintf(" %-9s %s", l.word, note)
		case aligned && l.bar >= 0:
			text += fmt.Sprintf(" %-9s %s", l.word, progressBar(l.bar))
		default:
			text += " " + l.word
		}
		out[i] = text
	}
	return out
}
