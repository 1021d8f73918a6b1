package raftnode

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// ErrStorage: this manager could not write its Raft log or its vote, so it
// can neither commit nor lead. hashicorp/raft answers a failed write by
// stepping down, and a member that cannot write its vote cannot be elected
// either; without this the user would only ever hear that there is no
// leader. Nothing committed is lost: the write that failed was not
// acknowledged, and the member carries on once the disk takes writes again.
var ErrStorage = errors.New("this manager cannot write its Raft log: free space, or fix the disk, under its --data-dir")

// storageWatch remembers the last failed write to the Raft log and stable
// store, until a write succeeds again.
type storageWatch struct {
	mu      sync.Mutex
	lastErr error
}

func (w *storageWatch) note(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err
	return err
}

// failure returns the last write's error, or nil if it succeeded (or
// nothing is watched).
func (w *storageWatch) failure() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// watchedLog is a raft.LogStore whose writes storageWatch sees.
type watchedLog struct {
	raft.LogStore
	w *storageWatch
}

func (l watchedLog) StoreLog(log *raft.Log) error { return l.w.note(l.LogStore.StoreLog(log)) }
func (l watchedLog) StoreLogs(logs []*raft.Log) error {
	return l.w.note(l.LogStore.StoreLogs(logs))
}

// watchedStable is a raft.StableStore (terms and votes) whose writes
// storageWatch sees.
type watchedStable struct {
	raft.StableStore
	w *storageWatch
}

func (s watchedStable) Set(key, val []byte) error { return s.w.note(s.StableStore.Set(key, val)) }
func (s watchedStable) SetUint64(key []byte, val uint64) error {
	return s.w.note(s.StableStore.SetUint64(key, val))
}

// StorageError returns ErrStorage, wrapped with the disk's own error, while
// this member's last write to its Raft log or stable store failed, and nil
// otherwise.
func (n *Node) StorageError() error {
	if err := n.storage.failure(); err != nil {
		return fmt.Errorf("%w (%w)", ErrStorage, err)
	}
	return nil
}
