package main

import (
	"bytes"
	"image/png"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if _, err := readResults(strings.NewReader("skiff deploy_s 1\n")); err == nil {
		t.Error("a short line was accepted")
	}
}

func TestPlot(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.tsv")
	if err := os.WriteFile(a, []byte("# t running\n0 5\n1.5 20\n3.2 50\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "p.png")
	if err := runPlot([]string{"-o", out, "-title", "Scale 5 -> 50", "skiff=" + a, "swarm=" + a}, nil); err != nil {
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
		t.Errorf("size %v", b)
	}
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

func TestGlyphsWellFormed(t *testing.T) {
	for r, g := range glyphs {
		for _, row := range g {
			if len(row) != glyphW {
				t.Errorf("glyph %q has a row of width %d", r, len(row))
			}
		}
	}
}
