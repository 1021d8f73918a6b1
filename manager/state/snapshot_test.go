package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// richStore returns a store with every kind of object, updates of each
// (so versions differ), placed and unplaced tasks, and a deleted object.
func richStore(t testing.TB) *Store {
	t.Helper()
	s := seed(t)
	mustApply(t, s, 2, putNode(testNode("n2", "h2")), putTask(testTask("t2", "sv1", "")), putTask(testTask("t3", "sv2", "n2")))
	mustApply(t, s, 3, taskStatus("t1", skiffpb.TaskState_TASK_STATE_RUNNING, "started"), nodeStatus("n2", skiffpb.NodeState_NODE_STATE_DOWN, "down"))
	sv := withVersion(testService("sv1", "st_web"), 1)
	sv.SpecVersion = 2
	sv.PreviousSpecs = []*skiffpb.VersionedSpec{{Version: 1, Spec: testService("", "st_web").Spec}}
	mustApply(t, s, 4, putService(sv), putService(testService("sv2", "st_db")), taskDesired("t3", skiffpb.TaskState_TASK_STATE_SHUTDOWN))
	mustApply(t, s, 5, putStack(testStack("st2", "gone")))
	mustApply(t, s, 6, delStack("st2"))
	return s
}

// snapshotBytes encodes s's snapshot.
func snapshotBytes(t tb, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := s.Snapshot().WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// restored returns a fresh store restored from data.
func restored(t tb, data []byte) *Store {
	t.Helper()
	s := New()
	if err := s.Restore(bytes.NewReader(data)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s
}

// chunks decodes the framing of a snapshot: its index and the number of
// objects in each chunk.
func chunks(t testing.TB, data []byte) (uint64, []int) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(data))
	index, err := binary.ReadUvarint(r)
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	var sizes []int
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return index, sizes
		}
		if err != nil {
			t.Fatalf("chunk length: %v", err)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("chunk: %v", err)
		}
		var c skiffpb.Command
		if err := proto.Unmarshal(buf, &c); err != nil {
			t.Fatalf("chunk decode: %v", err)
		}
		sizes = append(sizes, len(c.GetActions()))
	}
}

// TestSnapshotRoundTrip: Snapshot → WriteTo → Restore yields the same
// contents, versions, names and secondary indexes, and the same index.
func TestSnapshotRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		build func(t testing.TB) *Store
	}{
		{"empty store", func(testing.TB) *Store { return New() }},
		{"empty store at an index", func(t testing.TB) *Store {
			s := New()
			mustApply(t, s, 42)
			return s
		}},
		{"every kind of object", richStore},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.build(t)
			want := dump(t, src)
			got := restored(t, snapshotBytes(t, src))
			if d := dump(t, got); d != want {
				t.Fatalf("restored store:\n%s\nwant\n%s", d, want)
			}
			// The restored store keeps working: versions carry over, so an
			// update naming the old version applies.
			if src.Index() == 6 {
				mustApply(t, got, 7, putNode(withVersion(testNode("n1", "h1"), 1)))
				if err := got.Apply(8, cmd(putNode(testNode("n1", "h1")))); !errors.Is(err, ErrVersionConflict) {
					t.Errorf("create over a restored node = %v", err)
				}
			}
		})
	}
}

// TestSnapshotIsPointInTime: a snapshot encodes the store as it was when
// taken, even when writes are applied before it is written out.
func TestSnapshotIsPointInTime(t *testing.T) {
	s := richStore(t)
	want := dump(t, s)
	snap := s.Snapshot()
	mustApply(t, s, 7, taskStatus("t1", skiffpb.TaskState_TASK_STATE_FAILED, "x"), delNode("n2"),
		putNode(withVersion(testNode("n1", "renamed"), 1)), putTask(testTask("t9", "sv1", "n1")))
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if snap.Index != 6 {
		t.Errorf("snapshot index %d, want 6", snap.Index)
	}
	if got := dump(t, restored(t, buf.Bytes())); got != want {
		t.Fatalf("snapshot shows later writes:\n%s\nwant\n%s", got, want)
	}
}

// TestLargeSnapshot: 20,000 tasks span several chunks and restore whole.
func TestLargeSnapshot(t *testing.T) {
	const nTasks = 20000
	s := New()
	var actions []*skiffpb.StoreAction
	for i := 0; i < 10; i++ {
		actions = append(actions, putNode(testNode(fmt.Sprintf("n%d", i), fmt.Sprintf("h%d", i))))
	}
	mustApply(t, s, 1, actions...)
	for batch := 0; batch < nTasks/1000; batch++ {
		actions = actions[:0]
		for i := batch * 1000; i < (batch+1)*1000; i++ {
			tk := testTask(fmt.Sprintf("t%06d", i), fmt.Sprintf("sv%d", i%7), fmt.Sprintf("n%d", i%10))
			if i%5 == 0 {
				tk.NodeId = ""
			}
			actions = append(actions, putTask(tk))
		}
		mustApply(t, s, uint64(batch+2), actions...)
	}
	data := snapshotBytes(t, s)
	index, sizes := chunks(t, data)
	if index != s.Index() {
		t.Errorf("header index %d, want %d", index, s.Index())
	}
	total := 0
	for i, n := range sizes {
		if n > snapshotChunk || n == 0 {
			t.Errorf("chunk %d holds %d objects; want 1..%d", i, n, snapshotChunk)
		}
		total += n
	}
	if want := (nTasks + 10 + snapshotChunk - 1) / snapshotChunk; len(sizes) != want {
		t.Errorf("%d chunks, want %d", len(sizes), want)
	}
	if total != nTasks+10 {
		t.Errorf("snapshot holds %d objects, want %d", total, nTasks+10)
	}
	got := restored(t, data)
	if dump(t, got) != dump(t, s) {
		t.Fatal("restored large store differs")
	}
	wantOn := 0 // tasks placed on n3
	for i := 0; i < nTasks; i++ {
		if i%10 == 3 && i%5 != 0 {
			wantOn++
		}
	}
	got.View(func(tx ReadTx) {
		if tx.CountTasks() != nTasks || len(tx.TasksByNode("n3")) != wantOn || len(tx.TasksByService("sv2")) != (nTasks+4)/7 {
			t.Errorf("count %d, on n3 %d (want %d), of sv2 %d", tx.CountTasks(), len(tx.TasksByNode("n3")), wantOn, len(tx.TasksByService("sv2")))
		}
	})
}

// TestRestoreReplacesContents: Restore drops whatever the store held.
func TestRestoreReplacesContents(t *testing.T) {
	src := seed(t)
	data := snapshotBytes(t, src)
	dst := richStore(t)
	mustApply(t, dst, 99, putTask(testTask("extra", "sv9", "n9")))
	if err := dst.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, dst), dump(t, src); got != want {
		t.Fatalf("after restore:\n%s\nwant\n%s", got, want)
	}
}

// TestRestoreClosesWatchers: a restore closes every watch, since no stream
// of events describes it; a new watch works afterwards.
func TestRestoreClosesWatchers(t *testing.T) {
	s := richStore(t)
	data := snapshotBytes(t, seed(t))
	a, cancelA := s.ViewAndWatch(nil)
	defer cancelA()
	b, cancelB := s.ViewAndWatch(nil)
	defer cancelB()
	mustApply(t, s, 7, putStack(testStack("x", "x")))
	if err := s.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, a)
	expectClosed(t, b)
	c, cancelC := s.ViewAndWatch(nil)
	defer cancelC()
	mustApply(t, s, 8, putStack(testStack("y", "y")))
	if got := recvBatch(t, c); got.Index != 8 {
		t.Fatalf("new watch got index %d", got.Index)
	}
}

// TestRestoreErrors: a damaged snapshot is refused and leaves the store and
// its watchers as they were.
func TestRestoreErrors(t *testing.T) {
	good := snapshotBytes(t, richStore(t))
	hugeLen := binary.AppendUvarint(binary.AppendUvarint(nil, 5), maxChunkBytes+1)
	cases := []struct {
		name string
		data []byte
	}{
		{"empty input", nil},
		{"truncated header", []byte{0x80}},
		{"truncated chunk", good[:len(good)-3]},
		{"truncated length", append(binary.AppendUvarint(nil, 5), 0x80)},
		{"oversized chunk length", hugeLen},
		{"garbage chunk", append(binary.AppendUvarint(binary.AppendUvarint(nil, 5), 3), 0xff, 0xff, 0xff)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := seed(t)
			before := dump(t, s)
			ch, cancel := s.ViewAndWatch(nil)
			defer cancel()
			if err := s.Restore(bytes.NewReader(tc.data)); err == nil {
				t.Fatal("Restore accepted a damaged snapshot")
			}
			if got := dump(t, s); got != before {
				t.Errorf("failed restore changed the store:\n%s", got)
			}
			mustApply(t, s, 2, putStack(testStack("z", "z")))
			if b := recvBatch(t, ch); b.Index != 2 {
				t.Errorf("watch after a failed restore got index %d", b.Index)
			}
		})
	}
}

// failWriter fails every write after the first ok bytes.
type failWriter struct{ ok int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.ok >= len(p) {
		w.ok -= len(p)
		return len(p), nil
	}
	return 0, errors.New("disk full")
}

// TestSnapshotWriteError: a failing writer surfaces as an error.
func TestSnapshotWriteError(t *testing.T) {
	s := richStore(t)
	if _, err := s.Snapshot().WriteTo(&failWriter{}); err == nil {
		t.Fatal("WriteTo to a failing writer succeeded")
	}
}
