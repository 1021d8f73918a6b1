package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// fakeStream is the agent's end of a session, in memory.
type fakeStream struct {
	mu   sync.Mutex
	sent []*skiffpb.AgentMessage
	recv chan *skiffpb.ManagerMessage
}

func (f *fakeStream) Send(m *skiffpb.AgentMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, m)
	return nil
}

func (f *fakeStream) Recv() (*skiffpb.ManagerMessage, error) {
	m, ok := <-f.recv
	if !ok {
		return nil, io.EOF
	}
	return m, nil
}

// count returns how many heartbeats and status messages were sent.
func (f *fakeStream) count() (heartbeats, statuses int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.sent {
		switch {
		case m.GetHeartbeat() != nil:
			heartbeats++
		case m.GetStatuses() != nil:
			statuses++
		}
	}
	return heartbeats, statuses
}

func testSession(t *testing.T, period time.Duration) (*agentSession, *fakeStream) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a := newAgent(ctx, Config{Name: "h1", DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	fs := &fakeStream{recv: make(chan *skiffpb.ManagerMessage, 16)}
	s := &agentSession{a: a, stream: fs}
	s.period.Store(int64(period))
	s.lastAck.Store(time.Now().UnixNano())
	return s, fs
}

// runSend runs the session's sender until the test ends.
func runSend(t *testing.T, s *agentSession) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.send(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestHeartbeatsPauseWhileTrafficFlows: an agent that both hears from the
// leader and sends to it within every period sends no heartbeats; one the
// leader hears nothing from heartbeats again.
func TestHeartbeatsPauseWhileTrafficFlows(t *testing.T) {
	s, fs := testSession(t, 20*time.Millisecond)
	runSend(t, s)
	busy := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(busy) {
		now := time.Now().UnixNano()
		s.lastAck.Store(now)
		s.lastSent.Store(now)
		time.Sleep(2 * time.Millisecond)
	}
	if hb, _ := fs.count(); hb != 0 {
		t.Errorf("%d heartbeats while messages flowed both ways, want none", hb)
	}
	// The agent goes quiet; the leader still speaks.
	quiet := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(quiet) {
		s.lastAck.Store(time.Now().UnixNano())
		time.Sleep(2 * time.Millisecond)
	}
	if hb, _ := fs.count(); hb < 2 {
		t.Errorf("%d heartbeats in 10 quiet periods, want several", hb)
	}
}

// TestStatusesArePaced: a change after a quiet spell goes at once, in a
// message of its own; the quick succession that follows it goes as one
// message carrying the last state.
func TestStatusesArePaced(t *testing.T) {
	s, fs := testSession(t, time.Hour)
	runSend(t, s)
	q := s.a.worker.reports
	waitMessages := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, n := fs.count()
			if n >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d status messages, want %d", n, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	q.put("t1", &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_PREPARING})
	waitMessages(1)
	q.put("t1", &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_STARTING})
	q.put("t1", &skiffpb.TaskStatus{State: skiffpb.TaskState_TASK_STATE_RUNNING})
	waitMessages(2)
	time.Sleep(2 * statusLinger)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var got []string
	for _, m := range fs.sent {
		if m.GetStatuses() == nil {
			continue
		}
		var states []string
		for _, u := range m.GetStatuses().GetUpdates() {
			states = append(states, u.GetStatus().GetState().String())
		}
		got = append(got, strings.Join(states, "+"))
	}
	want := []string{"TASK_STATE_PREPARING", "TASK_STATE_RUNNING"}
	if !slices.Equal(got, want) {
		t.Errorf("status messages %v, want %v", got, want)
	}
}

// TestHeartbeatPeriodFollowsTheLeader: the period in an acknowledgement
// replaces the one the session started with, as a leader with many nodes
// stretches it.
func TestHeartbeatPeriodFollowsTheLeader(t *testing.T) {
	s, fs := testSession(t, 500*time.Millisecond)
	fs.recv <- &skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_HeartbeatAck{HeartbeatAck: &skiffpb.HeartbeatAck{HeartbeatPeriod: int64(5 * time.Second)}}}
	fs.recv <- &skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_HeartbeatAck{HeartbeatAck: &skiffpb.HeartbeatAck{}}}
	close(fs.recv)
	if err := s.receive(context.Background()); err != io.EOF {
		t.Fatalf("receive: %v", err)
	}
	if got := time.Duration(s.period.Load()); got != 5*time.Second {
		t.Errorf("period %s, want 5s (an acknowledgement without a period changes nothing)", got)
	}
}

// keyring records the keyrings the agent is given.
type keyring struct {
	mu  sync.Mutex
	got [][][]byte
}

func (k *keyring) SetKeys(keys [][]byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.got = append(k.got, keys)
	return nil
}

// TestGossipKeysReachTheKeyring: each keyring the leader sends is handed to
// the Keyring whole, in order; an agent without a Keyring ignores them.
func TestGossipKeysReachTheKeyring(t *testing.T) {
	oldKey, newKey := []byte(strings.Repeat("o", 32)), []byte(strings.Repeat("n", 32))
	stages := [][][]byte{{oldKey, newKey}, {newKey, oldKey}, {newKey}}
	for _, withKeyring := range []bool{true, false} {
		s, fs := testSession(t, time.Hour)
		k := &keyring{}
		if withKeyring {
			s.a.cfg.Keyring = k
		}
		for _, keys := range stages {
			fs.recv <- &skiffpb.ManagerMessage{Msg: &skiffpb.ManagerMessage_GossipKeys{GossipKeys: &skiffpb.GossipKeys{Keys: keys}}}
		}
		close(fs.recv)
		if err := s.receive(context.Background()); err != io.EOF {
			t.Fatalf("receive: %v", err)
		}
		if !withKeyring {
			continue
		}
		if !slices.EqualFunc(k.got, stages, func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }) {
			t.Errorf("the keyring was given %q, want %q", k.got, stages)
		}
	}
}
