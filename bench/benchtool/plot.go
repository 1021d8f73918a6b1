package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
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
	p, err := newPlot(all, *title, *xlabel, *ylabel)
	if err != nil {
		return err
	}
	return writePNG(p, *out)
}

// palette gives each series its colour, in the order they are named on the
// command line, so that skiff and Swarm keep their colours from run to run.
var palette = []color.RGBA{
	{31, 119, 180, 255}, // blue
	{255, 127, 14, 255}, // orange
	{44, 160, 44, 255},  // green
	{214, 39, 40, 255},  // red
	{148, 103, 189, 255},
	{140, 86, 75, 255},
}

// The PNG's size in pixels, and the resolution the plot's point sizes
// (fonts, line widths) are rendered at.
const (
	plotW, plotH = 960, 560
	plotDPI      = 96
)

// newPlot draws every series as a step line (a count holds until the next
// sample) with a mark at each sample, on shared axes starting at zero.
func newPlot(all []series, title, xlabel, ylabel string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(16)
	p.Title.Padding = vg.Points(10)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(13)
		a.Tick.Label.Font.Size = vg.Points(11)
	}
	// Bottom right inside the frame: the series are ramps up from the left,
	// so that corner is the one they leave empty.
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.TextStyle.Font.Size = vg.Points(12)
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(12), vg.Points(12)
	p.Legend.ThumbnailWidth = vg.Points(24)

	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 215}
	grid.Horizontal.Color = color.Gray{Y: 215}
	p.Add(grid)

	for i, s := range all {
		xys := make(plotter.XYs, len(s.t))
		for j := range s.t {
			xys[j] = plotter.XY{X: s.t[j], Y: s.v[j]}
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.label, err)
		}
		c := palette[i%len(palette)]
		// A count read at one sample holds until the next one.
		l.StepStyle = plotter.PostStep
		l.LineStyle.Color = c
		l.LineStyle.Width = vg.Points(2)
		pts.GlyphStyle = draw.GlyphStyle{Color: c, Radius: vg.Points(2), Shape: draw.BoxGlyph{}}
		p.Add(l, pts)
		p.Legend.Add(s.label, l, pts)
	}
	// Both axes start at zero, so that how long a ramp took to start and how
	// far it got read straight off them, and end on a tick; the y axis
	// leaves the highest marks clear of the frame.
	xstep, ystep := niceStep(p.X.Max), niceStep(p.Y.Max)
	p.X.Min, p.X.Max = 0, max(xstep, math.Ceil(p.X.Max/xstep)*xstep)
	p.Y.Min, p.Y.Max = 0, max(ystep, math.Ceil(p.Y.Max*1.05/ystep)*ystep)
	p.X.Tick.Marker, p.Y.Tick.Marker = ticks{xstep}, ticks{ystep}
	return p, nil
}

// niceStep picks a tick step of 1, 2 or 5 × 10^k giving at most about
// eight ticks over [0, max]: the library's default ticker gives three or
// four, too few to read a time off.
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

// ticks marks every multiple of step, labelled with no more decimals than
// the step needs (the library's default labels counts as 50.00).
type ticks struct{ step float64 }

// Ticks implements plot.Ticker.
func (t ticks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	// Multiples rather than a running sum, which drifts off them.
	for i := math.Ceil(lo / t.step); i*t.step <= hi+t.step/1e6; i++ {
		out = append(out, plot.Tick{Value: i * t.step, Label: fmtTick(i*t.step, t.step)})
	}
	return out
}

func fmtTick(v, step float64) string {
	if step >= 1 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	digits := int(math.Ceil(-math.Log10(step)))
	return strconv.FormatFloat(v, 'f', digits, 64)
}

// render draws p on a canvas of plotW×plotH pixels. It sizes the canvas
// itself rather than going through p.Save, whose sizes are in points at the
// library's default resolution, so that the image's size is fixed here.
func render(p *plot.Plot) *vgimg.Canvas {
	length := func(px int) vg.Length { return vg.Length(px) * vg.Inch / plotDPI }
	c := vgimg.NewWith(vgimg.UseWH(length(plotW), length(plotH)), vgimg.UseDPI(plotDPI))
	p.Draw(draw.New(c))
	return c
}

// writePNG renders p into a PNG file at path.
func writePNG(p *plot.Plot, path string) error {
	c := render(p)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create the plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
