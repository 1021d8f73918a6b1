package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestCompareTasks: a task that ran before the kill has moved if it is gone,
// stopped, asked to stop, or on another node; new tasks are counted apart.
func TestCompareTasks(t *testing.T) {
	const running, shutdown = skiffpb.TaskState_TASK_STATE_RUNNING, skiffpb.TaskState_TASK_STATE_SHUTDOWN
	before := map[string]placedTask{
		"kept":    {node: "n1", desired: running, state: running},
		"gone":    {node: "n1", desired: running, state: running},
		"stopped": {node: "n1", desired: running, state: running},
		"asked":   {node: "n1", desired: running, state: running},
		"moved":   {node: "n1", desired: running, state: running},
		"old":     {node: "n2", desired: shutdown, state: shutdown},
	}
	after := map[string]placedTask{
		"kept":    {node: "n1", desired: running, state: running},
		"stopped": {node: "n1", desired: running, state: shutdown},
		"asked":   {node: "n1", desired: shutdown, state: running},
		"moved":   {node: "n2", desired: running, state: running},
		"old":     {node: "n2", desired: shutdown, state: shutdown},
		"new":     {node: "n3", desired: running, state: running},
	}
	compared, moved, added := compareTasks(before, after)
	if compared != 5 || moved != 4 || added != 1 {
		t.Errorf("compareTasks = %d compared, %d moved, %d new; want 5, 4, 1", compared, moved, added)
	}
}

// TestScrapeGauge reads the sessions gauge from a Prometheus text page and
// asks for that metric alone.
func TestScrapeGauge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query()["name[]"]; len(got) != 1 || got[0] != sessionsMetric {
			http.Error(w, fmt.Sprintf("name[] = %q", got), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "# HELP %[1]s Agents.\n# TYPE %[1]s gauge\n%[1]s_other 7\n%[1]s 998\n", sessionsMetric)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := scrapeGauge(ctx, srv.URL, sessionsMetric)
	if err != nil || n != 998 {
		t.Errorf("scrapeGauge = %d, %v; want 998", n, err)
	}
	if _, err := scrapeGauge(ctx, srv.URL, "skiff_absent"); err == nil {
		t.Error("scrapeGauge found a metric the page does not have")
	}
}

// TestRowColumns: a row has as many columns as the header, with the
// leader-kill phase and without.
func TestRowColumns(t *testing.T) {
	header := strings.Split(strings.TrimSpace(tableHeader), "\n")
	want := strings.Count(header[len(header)-2], "|")
	base := result{agents: 1000, tasks: 100000, converged: time.Minute, running: 100000, at: time.Minute}
	withKill := base
	withKill.kill = &killResult{oldLeader: "m1", newLeader: "m2", elected: time.Second, reconnected90: 2 * time.Second,
		reconnected: 3 * time.Second, sessions: 1000, minSteadySessions: 1000, compared: 100000}
	failed := base
	failed.kill = &killResult{oldLeader: "m1", failure: "no new leader within 2m0s"}
	stuck := base
	stuck.kill = &killResult{oldLeader: "m1", newLeader: "m3", elected: time.Second, reconnected90: 5 * time.Second,
		sessions: 990, failure: "990 of 1000 agents reconnected within 2m0s"}
	for name, r := range map[string]result{"without": base, "with": withKill, "failed": failed, "stuck": stuck} {
		if got := strings.Count(row(r), "|"); got != want {
			t.Errorf("%s the leader kill: %d separators, the header has %d:\n%s", name, got, want, row(r))
		}
	}
}
