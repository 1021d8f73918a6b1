package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// series is one line of the plot: (seconds, value) points in time order.
type series struct {
	label string
	t, v  []float64
}

// readSeries reads a file of "SECONDS VALUE" lines (tabs or spaces; lines
// starting with # are comments).
func readSeries(label, path string) (series, error) {
	f, err := os.Open(path)
	if err != nil {
		return series{}, err
	}
	defer f.Close()
	s := series{label: label}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return series{}, fmt.Errorf("%s:%d: want SECONDS VALUE", path, n)
		}
		t, err1 := strconv.ParseFloat(fields[0], 64)
		v, err2 := strconv.ParseFloat(fields[1], 64)
		if err1 != nil || err2 != nil {
			return series{}, fmt.Errorf("%s:%d: not numbers: %q", path, n, line)
		}
		s.t = append(s.t, t)
		s.v = append(s.v, v)
	}
	if err := sc.Err(); err != nil {
		return series{}, err
	}
	if len(s.t) == 0 {
		return series{}, fmt.Errorf("%s: no points", path)
	}
	return s, nil
}

func runPlot(args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	out := fs.String("o", "", "PNG file to write")
	title := fs.String("title", "", "title above the plot")
	xlabel := fs.String("xlabel", "seconds since the command", "x axis label")
	ylabel := fs.String("ylabel", "tasks running", "y axis label")
	pos, err := parse(fs, args, -1)
	if err != nil {
		return err
	}
	if *out == "" || len(pos) == 0 {
		return errors.New("need -o FILE.png and at least one LABEL=FILE")
	}
	var all []series
	for _, a := range pos {
		label, path, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q is not LABEL=FILE", a)
		}
		s, err := readSeries(label, path)
		if err != nil {
			return err
		}
		all = append(all, s)
	}
	img := plot(all, *title, *xlabel, *ylabel)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{0, 0, 0, 255}
	grey    = color.RGBA{225, 225, 225, 255}
	palette = []color.RGBA{
		{31, 119, 180, 255}, // blue
		{255, 127, 14, 255}, // orange
		{44, 160, 44, 255},  // green
		{214, 39, 40, 255},  // red
		{148, 103, 189, 255},
		{140, 86, 75, 255},
	}
)

const (
	plotW, plotH                       = 960, 560
	marginL, marginR, marginT, marginB = 90, 30, 60, 70
)

// niceStep picks a tick step of 1, 2 or 5 × 10^k giving at most about
// eight ticks over [0, max].
func niceStep(max float64) float64 {
	if max <= 0 {
		return 1
	}
	raw := max / 8
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v, step float64) string {
	if step >= 1 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	digits := int(math.Ceil(-math.Log10(step)))
	return strconv.FormatFloat(v, 'f', digits, 64)
}

// plot draws every series as a step line (a count holds until the next
// sample) on shared axes starting at zero.
func plot(all []series, title, xlabel, ylabel string) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fillRect(img, 0, 0, plotW, plotH, white)
	var xmax, ymax float64
	for _, s := range all {
		for i := range s.t {
			xmax = math.Max(xmax, s.t[i])
			ymax = math.Max(ymax, s.v[i])
		}
	}
	xstep, ystep := niceStep(xmax), niceStep(ymax)
	xmax = math.Max(xstep, math.Ceil(xmax/xstep)*xstep)
	ymax = math.Max(ystep, math.Ceil(ymax*1.05/ystep)*ystep)

	x0, y0 := marginL, plotH-marginB // origin in pixels
	w, h := plotW-marginL-marginR, plotH-marginT-marginB
	px := func(t float64) int { return x0 + int(math.Round(t/xmax*float64(w))) }
	py := func(v float64) int { return y0 - int(math.Round(v/ymax*float64(h))) }

	// Grid, ticks and their labels.
	for v := 0.0; v <= xmax+xstep/1e6; v += xstep {
		x := px(v)
		fillRect(img, x, marginT, 1, h, grey)
		fillRect(img, x, y0, 1, 6, black)
		l := fmtTick(v, xstep)
		drawText(img, x-textWidth(l, 2)/2, y0+12, l, 2, black)
	}
	for v := 0.0; v <= ymax+ystep/1e6; v += ystep {
		y := py(v)
		fillRect(img, x0, y, w, 1, grey)
		fillRect(img, x0-6, y, 6, 1, black)
		l := fmtTick(v, ystep)
		drawText(img, x0-12-textWidth(l, 2), y-glyphH, l, 2, black)
	}
	fillRect(img, x0, marginT, 2, h+1, black)
	fillRect(img, x0, y0, w+1, 2, black)
	drawText(img, x0+(w-textWidth(xlabel, 2))/2, plotH-28, xlabel, 2, black)
	drawTextUp(img, 14, marginT+(h+textWidth(ylabel, 2))/2, ylabel, 2, black)
	drawText(img, (plotW-textWidth(title, 3))/2, 16, title, 3, black)

	for i, s := range all {
		c := palette[i%len(palette)]
		for j := range s.t {
			x, y := px(s.t[j]), py(s.v[j])
			if j > 0 {
				// The previous count holds until this sample, then steps.
				px0, py0 := px(s.t[j-1]), py(s.v[j-1])
				line(img, px0, py0, x, py0, c)
				line(img, x, py0, x, y, c)
			}
			fillRect(img, x-2, y-2, 5, 5, c)
		}
		// Legend, top left inside the plot.
		ly := marginT + 14 + i*26
		fillRect(img, x0+16, ly+2, 24, 10, c)
		drawText(img, x0+48, ly, s.label, 2, black)
	}
	return img
}

// line draws a 3-pixel-wide segment from (x1, y1) to (x2, y2).
func line(img *image.RGBA, x1, y1, x2, y2 int, c color.Color) {
	dx, dy := x2-x1, y2-y1
	n := max(abs(dx), abs(dy))
	for i := 0; i <= n; i++ {
		x, y := x1, y1
		if n > 0 {
			x = x1 + dx*i/n
			y = y1 + dy*i/n
		}
		fillRect(img, x-1, y-1, 3, 3, c)
	}
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}
