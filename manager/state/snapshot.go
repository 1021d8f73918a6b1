package state

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// snapshotChunk bounds how many objects one encoded Command of a snapshot
// holds, so that neither writing nor reading a snapshot of a million tasks
// needs one huge message in memory.
const snapshotChunk = 4096

// Snapshot is a point-in-time copy of the store. Taking one only copies
// pointers (stored objects are immutable), so Apply is blocked for as short
// as possible; the encoding happens later, in WriteTo, concurrently with
// Apply.
type Snapshot struct {
	Index   uint64
	objects []*skiffpb.StoreAction
}

// Snapshot captures the store's current contents.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := len(s.nodes.byID) + len(s.networks.byID) + len(s.stacks.byID) + len(s.services.byID) + len(s.tasks.byID) + 1
	objs := make([]*skiffpb.StoreAction, 0, n)
	if s.cluster != nil {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutCluster{PutCluster: s.cluster}})
	}
	for _, o := range s.nodes.byID {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNode{PutNode: o}})
	}
	for _, o := range s.networks.byID {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: o}})
	}
	for _, o := range s.stacks.byID {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutStack{PutStack: o}})
	}
	for _, o := range s.services.byID {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: o}})
	}
	for _, o := range s.tasks.byID {
		objs = append(objs, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutTask{PutTask: o}})
	}
	return &Snapshot{Index: s.index, objects: objs}
}

// WriteTo encodes the snapshot: the index as a uvarint, then a sequence of
// length-prefixed Commands, each holding up to snapshotChunk whole-object
// writes.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [binary.MaxVarintLen64]byte
	written := int64(binary.PutUvarint(lenBuf[:], sn.Index))
	if _, err := bw.Write(lenBuf[:written]); err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	var buf []byte
	for start := 0; start < len(sn.objects); start += snapshotChunk {
		end := min(start+snapshotChunk, len(sn.objects))
		var err error
		buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], &skiffpb.Command{Actions: sn.objects[start:end]})
		if err != nil {
			return written, fmt.Errorf("encode snapshot chunk: %w", err)
		}
		n := binary.PutUvarint(lenBuf[:], uint64(len(buf)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return written, fmt.Errorf("write snapshot: %w", err)
		}
		if _, err := bw.Write(buf); err != nil {
			return written, fmt.Errorf("write snapshot: %w", err)
		}
		written += int64(n + len(buf))
	}
	if err := bw.Flush(); err != nil {
		return written, fmt.Errorf("write snapshot: %w", err)
	}
	return written, nil
}

// maxChunkBytes guards Restore against a corrupt length prefix.
const maxChunkBytes = 1 << 30

// Restore replaces the store's contents with a snapshot written by WriteTo.
// Every watch is closed, since watchers must re-read.
func (s *Store) Restore(r io.Reader) error {
	fresh := New()
	br := bufio.NewReaderSize(r, 1<<20)
	tx := &writeTx{s: fresh}
	index, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	for {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read snapshot: %w", err)
		}
		if size > maxChunkBytes {
			return fmt.Errorf("read snapshot: chunk of %d bytes: %w", size, ErrInvalidCommand)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("read snapshot: %w", err)
		}
		var cmd skiffpb.Command
		if err := proto.Unmarshal(buf, &cmd); err != nil {
			return fmt.Errorf("decode snapshot chunk: %w", err)
		}
		for _, a := range cmd.GetActions() {
			tx.restore(a)
		}
	}
	s.mu.Lock()
	s.index = index
	s.cluster = fresh.cluster
	s.nodes, s.networks, s.stacks, s.services, s.tasks = fresh.nodes, fresh.networks, fresh.stacks, fresh.services, fresh.tasks
	s.tasksByNode, s.tasksByService, s.taskCounts = fresh.tasksByNode, fresh.tasksByService, fresh.taskCounts
	s.mu.Unlock()
	s.watchers.closeAll()
	return nil
}

// restore stores an object from a snapshot as it is, version included.
func (tx *writeTx) restore(a *skiffpb.StoreAction) {
	s := tx.s
	switch act := a.GetAction().(type) {
	case *skiffpb.StoreAction_PutCluster:
		s.cluster = act.PutCluster
	case *skiffpb.StoreAction_PutNode:
		s.nodes.put(act.PutNode)
	case *skiffpb.StoreAction_PutNetwork:
		s.networks.put(act.PutNetwork)
	case *skiffpb.StoreAction_PutStack:
		s.stacks.put(act.PutStack)
	case *skiffpb.StoreAction_PutService:
		s.services.put(act.PutService)
	case *skiffpb.StoreAction_PutTask:
		s.tasks.put(act.PutTask)
		tx.reindexTask(nil, act.PutTask)
	}
}
