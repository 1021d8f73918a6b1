package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestSummary(t *testing.T) {
	in := `# system metric run value
skiff	deploy_s	1	1.0
skiff	deploy_s	2	1.2
skiff	deploy_s	3	0.9
swarm	deploy_s	1	2.5
swarm	deploy_s	2	2.4
swarm	deploy_s	3	2.6
skiff	hostfail_s	1	4
vxlan	tput_gbps	1	10
skiff	tput_gbps	1	9.6
swarm	leaderfail_call_s_failed	1	20.2
skiff	agent_rss_idle_mib	1	25
bare	start_ms	1	80
skiff	start_ms	1	100
skiff	moved_healthy	1	0
skiff	moved_healthy	2	1
skiff	moved_healthy	3	0
swarm	moved_healthy	1	2
swarm	moved_healthy	2	3
swarm	moved_healthy	3	0
`
	res, err := readResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	writeSummary(&out, res)
	s := out.String()
	for _, want := range []string{
		"| 1.00 s | 1.00, 1.20, 0.90 | swarm: 2.50 s | 2.50, 2.40, 2.60 | 0.40 | ≤ 0.5× swarm | yes |",
		"| 4.00 s | 4.00 | swarm: – s | – | – | ≤ 3 s | **no** |",
		"| 9.60 Gbit/s | 9.60 | vxlan: 10.00 Gbit/s | 10.00 | 0.96 | ≥ 0.95× vxlan | yes |",
		"swarm: – s | –; failed: 20.20 |",
		"| 25.0 MiB | 25.0 | – | – | – | ≤ 40 MiB | yes |",
		"| 100 ms | 100 | bare: 80 ms | 80 | 1.25 | ≤ 1.2× bare | **no** |",
		"| 0 tasks | 0, 1, 0 | swarm: 2 tasks | 2, 3, 0 | 0.00 | 0 | yes |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	// Over an even number of runs a count's median can be a half: not 0,
	// and not printed as a whole number.
	res, err = readResults(strings.NewReader("skiff\tmoved_healthy\t1\t0\nskiff\tmoved_healthy\t2\t1\n"))
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	writeSummary(&out, res)
	if want := "| 0.5 tasks | 0, 1 | swarm: – tasks | – | – | 0 | **no** |"; !strings.Contains(out.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, out.String())
	}
	if _, err := readResults(strings.NewReader("skiff deploy_s 1\n")); err == nil {
		t.Error("a short line was accepted")
	}
}

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a := write("a.tsv", "# t running\n0 5\n1.5 20\n3.2 50\n")
	b := write("b.tsv", "0 5\n4 10\n8 50\n")
	out := filepath.Join(dir, "p.png")
	if err := runPlot([]string{"-o", out, "-title", "Scale 5 -> 50", "skiff=" + a, "swarm=" + b}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != plotH {
		t.Fatalf("size %v, want %dx%d", b, plotW, plotH)
	}
	if c := color.RGBAModel.Convert(img.At(0, 0)); c != (color.RGBA{255, 255, 255, 255}) {
		t.Errorf("background %v, want white", c)
	}
	for i, label := range []string{"skiff", "swarm"} {
		if n := countColour(img, palette[i]); n < 500 {
			t.Errorf("%s: %d pixels in its colour %v; its line is missing", label, n, palette[i])
		}
	}

	for _, args := range [][]string{
		{"skiff=" + a},
		{"-o", out},
		{"-o", out, "skiff"},
		{"-o", out, "empty=" + write("empty.tsv", "# nothing\n")},
		{"-o", out, "bad=" + write("bad.tsv", "0 five\n")},
	} {
		if err := runPlot(args, nil); err == nil {
			t.Errorf("runPlot(%q) succeeded", args)
		}
	}
}

func TestPlotAxesAndSteps(t *testing.T) {
	s := series{label: "swarm", t: []float64{0, 4, 8}, v: []float64{5, 10, 50}}
	p, err := newPlot([]series{s}, "", "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	// Steps of 1 s and 10 tasks; the y axis ends on the tick above 50×1.05.
	if p.X.Min != 0 || p.X.Max != 8 || p.Y.Min != 0 || p.Y.Max != 60 {
		t.Errorf("axes x [%v, %v] y [%v, %v], want x [0, 8] y [0, 60]", p.X.Min, p.X.Max, p.Y.Min, p.Y.Max)
	}
	var labels []string
	for _, tk := range p.Y.Tick.Marker.Ticks(p.Y.Min, p.Y.Max) {
		labels = append(labels, tk.Label)
	}
	if got := strings.Join(labels, " "); got != "0 10 20 30 40 50 60" {
		t.Errorf("y ticks %q", got)
	}

	// The count of 10 read at t=4 holds until t=8: at t=6 the line is at
	// 10, not halfway to 50 as a straight line would be.
	c := render(p)
	img := c.Image()
	da := p.DataCanvas(draw.New(c))
	trX, trY := p.Transforms(&da)
	px := func(l vg.Length) float64 { return l.Dots(plotDPI) }
	x := int(px(trX(6)))
	near := func(v float64) bool {
		y := plotH - int(px(trY(v)))
		for dy := -3; dy <= 3; dy++ {
			if color.RGBAModel.Convert(img.At(x, y+dy)) == palette[0] {
				return true
			}
		}
		return false
	}
	if !near(10) {
		t.Error("no line at count 10 between the samples at t=4 and t=8")
	}
	if near(30) {
		t.Error("a line at count 30 at t=6: the samples are joined straight, not stepped")
	}
}

func TestTicks(t *testing.T) {
	for _, c := range []struct {
		max  float64
		want string
	}{
		{0, "0 1"},
		{8, "0 1 2 3 4 5 6 7 8"},
		{19.5, "0 5 10 15 20"},
		{0.5, "0.0 0.1 0.2 0.3 0.4 0.5"},
		{0.33, "0.00 0.05 0.10 0.15 0.20 0.25 0.30 0.35"},
	} {
		step := niceStep(c.max)
		var labels []string
		for _, tk := range (ticks{step}).Ticks(0, max(step, math.Ceil(c.max/step)*step)) {
			labels = append(labels, tk.Label)
		}
		if got := strings.Join(labels, " "); got != c.want {
			t.Errorf("ticks up to %v: %q, want %q", c.max, got, c.want)
		}
	}
}

// countColour counts the pixels of img that are exactly c.
func countColour(img image.Image, c color.RGBA) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == c {
				n++
			}
		}
	}
	return n
}

func TestRTT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	go runRTTServe([]string{addr, "-for", "5s"}, &bytes.Buffer{})
	var out bytes.Buffer
	deadline := time.Now().Add(3 * time.Second)
	for {
		out.Reset()
		err = runRTT([]string{addr, "-n", "200", "-warmup", "10"}, &out)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "median_us=") || !strings.Contains(out.String(), "n=200") {
		t.Errorf("output %q", out.String())
	}
}
