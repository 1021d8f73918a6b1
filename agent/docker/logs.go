package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// Logs writes the task's container log to fn, one LogMessage per line, with
// the line's engine timestamp and its stream (a TTY container's output is all
// stdout). Data holds the line without its line ending. It follows new output
// when follow is set, and starts tail lines from the end (-1: everything).
//
// It returns nil when the log ends, fn's error unchanged when fn fails, and
// ctx's error when ctx ends. A task without a container is an error wrapping
// ErrNoContainer.
func (e *Executor) Logs(ctx context.Context, taskID string, follow bool, tail int64, fn func(*skiffpb.LogMessage) error) error {
	c, ok, err := e.find(ctx, taskID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("logs of task %s: %w", taskID, ErrNoContainer)
	}
	info, err := e.client.ContainerInspect(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("logs of task %s: inspect container %s: %w", taskID, c.ID, err)
	}
	tailArg := "all"
	if tail >= 0 {
		tailArg = strconv.FormatInt(tail, 10)
	}
	rc, err := e.client.ContainerLogs(ctx, c.ID, container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     follow,
		Tail:       tailArg,
		// Asked for even when the caller does not show them, because
		// LogMessage always carries a timestamp.
		Timestamps: true,
	})
	if err != nil {
		return fmt.Errorf("logs of task %s: %w", taskID, err)
	}
	defer rc.Close()

	slot, _ := strconv.ParseUint(c.Labels[LabelSlot], 10, 64)
	base := &skiffpb.LogMessage{
		TaskId:      taskID,
		NodeId:      e.node,
		ServiceName: c.Labels[LabelService],
		Slot:        slot,
	}
	stdout := &lineWriter{base: base, stream: skiffpb.LogStream_LOG_STREAM_STDOUT, fn: fn}
	stderr := &lineWriter{base: base, stream: skiffpb.LogStream_LOG_STREAM_STDERR, fn: fn}
	if info.Config != nil && info.Config.Tty {
		// A TTY merges the streams and the engine sends them raw, without
		// stdcopy's framing.
		_, err = io.Copy(stdout, rc)
	} else {
		_, err = stdcopy.StdCopy(stdout, stderr, rc)
	}
	if err == nil {
		// The log ended: a last line without a line ending is still a line.
		if err = stdout.flush(); err == nil {
			err = stderr.flush()
		}
	}
	switch {
	case stdout.fnErr != nil:
		return stdout.fnErr
	case stderr.fnErr != nil:
		return stderr.fnErr
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("read log of task %s: %w", taskID, err)
	}
	return nil
}

// lineWriter splits one of a container's streams into lines and hands each
// to fn. Every line the engine writes starts with its timestamp, except in
// a TTY's raw output, where a timestamp heads a chunk of several lines; lines
// without one take the last one seen.
type lineWriter struct {
	base   *skiffpb.LogMessage
	stream skiffpb.LogStream
	fn     func(*skiffpb.LogMessage) error
	buf    []byte
	lastTS int64
	// fnErr is fn's failure, kept apart from read errors so that Logs can
	// return it unchanged.
	fnErr error
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	rest := w.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		if err := w.emit(rest[:i]); err != nil {
			return 0, err
		}
		rest = rest[i+1:]
	}
	// Keep the partial line at the front, so the buffer never grows past
	// the longest line.
	w.buf = w.buf[:copy(w.buf, rest)]
	return len(p), nil
}

func (w *lineWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.emit(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *lineWriter) emit(line []byte) error {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if i := bytes.IndexByte(line, ' '); i > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(line[:i])); err == nil {
			w.lastTS = t.UnixNano()
			line = line[i+1:]
		}
	}
	msg := &skiffpb.LogMessage{
		TaskId:      w.base.GetTaskId(),
		NodeId:      w.base.GetNodeId(),
		ServiceName: w.base.GetServiceName(),
		Slot:        w.base.GetSlot(),
		Stream:      w.stream,
		Timestamp:   w.lastTS,
		// fn may keep the message; the buffer is reused.
		Data: bytes.Clone(line),
	}
	if err := w.fn(msg); err != nil {
		w.fnErr = err
		return err
	}
	return nil
}
