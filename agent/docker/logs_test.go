package docker

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func TestLineWriterSplitsLinesAndTimestamps(t *testing.T) {
	ts1 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	ts2 := ts1.Add(time.Second)
	stamp := func(t time.Time) string { return t.Format(time.RFC3339Nano) + " " }

	tests := []struct {
		name   string
		writes []string
		want   []string
		times  []time.Time
	}{
		{
			name:   "one write, several lines",
			writes: []string{stamp(ts1) + "a\n" + stamp(ts2) + "b\n"},
			want:   []string{"a", "b"},
			times:  []time.Time{ts1, ts2},
		},
		{
			name:   "line split across writes",
			writes: []string{stamp(ts1) + "hel", "lo wor", "ld\n"},
			want:   []string{"hello world"},
			times:  []time.Time{ts1},
		},
		{
			name:   "TTY chunk: CRLF, later lines take the chunk's time",
			writes: []string{stamp(ts1) + "a\r\nb\r\n"},
			want:   []string{"a", "b"},
			times:  []time.Time{ts1, ts1},
		},
		{
			name:   "empty line",
			writes: []string{stamp(ts1) + "\n"},
			want:   []string{""},
			times:  []time.Time{ts1},
		},
		{
			name:   "last line without newline is flushed",
			writes: []string{stamp(ts1) + "a\n" + stamp(ts2) + "tail"},
			want:   []string{"a", "tail"},
			times:  []time.Time{ts1, ts2},
		},
		{
			name:   "no timestamp",
			writes: []string{"plain text\n"},
			want:   []string{"plain text"},
			times:  []time.Time{{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*skiffpb.LogMessage
			w := &lineWriter{
				base:   &skiffpb.LogMessage{TaskId: "t1", NodeId: "n1", ServiceName: "s_web", Slot: 2},
				stream: skiffpb.LogStream_LOG_STREAM_STDERR,
				fn:     func(m *skiffpb.LogMessage) error { got = append(got, m); return nil },
			}
			for _, p := range tt.writes {
				if n, err := w.Write([]byte(p)); err != nil || n != len(p) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines, want %d: %v", len(got), len(tt.want), got)
			}
			for i, m := range got {
				wantTS := int64(0)
				if !tt.times[i].IsZero() {
					wantTS = tt.times[i].UnixNano()
				}
				if string(m.GetData()) != tt.want[i] || m.GetTimestamp() != wantTS ||
					m.GetTaskId() != "t1" || m.GetNodeId() != "n1" || m.GetServiceName() != "s_web" || m.GetSlot() != 2 ||
					m.GetStream() != skiffpb.LogStream_LOG_STREAM_STDERR {
					t.Errorf("line %d = %v, want %q at %v", i, m, tt.want[i], tt.times[i])
				}
			}
		})
	}
}

func TestLineWriterStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	calls := 0
	w := &lineWriter{base: &skiffpb.LogMessage{}, fn: func(*skiffpb.LogMessage) error { calls++; return stop }}
	if _, err := w.Write([]byte("a\nb\nc\n")); !errors.Is(err, stop) {
		t.Fatalf("Write error = %v, want the callback's", err)
	}
	if calls != 1 || !errors.Is(w.fnErr, stop) {
		t.Errorf("callback called %d times, fnErr %v; want once, recorded", calls, w.fnErr)
	}
}

// The tests below run real containers on the local engine.

func TestLogsOfExitedContainer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	evs := h.events()
	mixed := h.assignment("log", "OUT:one", "ERR:two", "OUT:three", "OUT:four")
	plain := h.assignment("log", "OUT:a", "OUT:b", "OUT:c")
	tty := h.assignment("log", "OUT:t1", "OUT:t2")
	tty.Spec.Container.Tty = true
	for _, a := range []*skiffpb.Assignment{mixed, plain, tty} {
		h.run(a)
	}
	waitEvents(t, evs, map[string]func(*skiffpb.TaskStatus) bool{
		mixed.GetTask().GetId(): isState(skiffpb.TaskState_TASK_STATE_COMPLETE),
		plain.GetTask().GetId(): isState(skiffpb.TaskState_TASK_STATE_COMPLETE),
		tty.GetTask().GetId():   isState(skiffpb.TaskState_TASK_STATE_COMPLETE),
	})

	logs := func(a *skiffpb.Assignment, tail int64) (stdout, stderr []string) {
		t.Helper()
		err := h.ex.Logs(context.Background(), a.GetTask().GetId(), false, tail, func(m *skiffpb.LogMessage) error {
			if m.GetTaskId() != a.GetTask().GetId() || m.GetNodeId() != h.node || m.GetServiceName() != "test_app" ||
				m.GetSlot() != 1 || m.GetTimestamp() == 0 {
				t.Errorf("log message %v lacks its task, node, service, slot or time", m)
			}
			if m.GetStream() == skiffpb.LogStream_LOG_STREAM_STDERR {
				stderr = append(stderr, string(m.GetData()))
			} else {
				stdout = append(stdout, string(m.GetData()))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Logs: %v", err)
		}
		return stdout, stderr
	}

	// stdout and stderr are separate pipes, so only the order within each
	// stream is the program's.
	if out, errs := logs(mixed, -1); !slices.Equal(out, []string{"one", "three", "four"}) || !slices.Equal(errs, []string{"two"}) {
		t.Errorf("Logs(all) = stdout %q, stderr %q", out, errs)
	}
	if out, _ := logs(plain, 2); !slices.Equal(out, []string{"b", "c"}) {
		t.Errorf("Logs(tail 2) = %q, want [b c]", out)
	}
	if out, _ := logs(plain, 0); len(out) != 0 {
		t.Errorf("Logs(tail 0) = %q, want nothing", out)
	}
	if out, errs := logs(tty, -1); !slices.Equal(out, []string{"t1", "t2"}) || len(errs) != 0 {
		t.Errorf("Logs(TTY) = stdout %q, stderr %q, want [t1 t2] on stdout", out, errs)
	}
}

func TestLogsFollow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.assignment("log", "OUT:x", "OUT:y", "--sleep")
	id := a.GetTask().GetId()
	h.run(a)

	// A callback's error ends a follow, unchanged.
	stop := errors.New("seen enough")
	var got []string
	err := h.ex.Logs(context.Background(), id, true, -1, func(m *skiffpb.LogMessage) error {
		got = append(got, string(m.GetData()))
		if len(got) == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !slices.Equal(got, []string{"x", "y", "ready"}) {
		t.Errorf("Logs(follow) = %q, %v; want [x y ready] and the callback's error", got, err)
	}

	// So does the context.
	ctx, cancel := context.WithCancel(context.Background())
	err = h.ex.Logs(ctx, id, true, 1, func(m *skiffpb.LogMessage) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Logs(follow) after cancel = %v, want context.Canceled", err)
	}

	// A follow of a container that exits ends with the log.
	if err := h.ex.Stop(context.Background(), id, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := h.ex.Logs(context.Background(), id, true, 0, func(*skiffpb.LogMessage) error { return nil }); err != nil {
		t.Errorf("Logs(follow) of a stopped container = %v, want nil", err)
	}
}
