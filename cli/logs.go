package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	skiffpb "github.com/skiffhq/skiff/proto"
)

func (a *app) serviceLogsCommand() *cobra.Command {
	var (
		follow     bool
		tail       int64
		timestamps bool
		noTrunc    bool
	)
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] SERVICE",
		Short: "Fetch the logs of a service's tasks",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctl, err := a.control()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			sv, err := ctl.GetService(ctx, &skiffpb.GetServiceRequest{Service: args[0]})
			if err != nil {
				return err
			}
			p, err := newLogPrefixer(ctx, ctl, sv, noTrunc)
			if err != nil {
				return err
			}
			stream, err := ctl.ServiceLogs(ctx, &skiffpb.ServiceLogsRequest{Service: sv.GetId(), Follow: follow, Tail: tail, Timestamps: timestamps})
			if err != nil {
				return err
			}
			for {
				msg, err := stream.Recv()
				switch {
				case errors.Is(err, io.EOF):
					return nil
				case err != nil && ctx.Err() != nil:
					return nil // interrupted, as a follow is meant to end
				case err != nil:
					return err
				}
				w := a.stdout()
				if msg.GetStream() == skiffpb.LogStream_LOG_STREAM_STDERR {
					w = a.stderr()
				}
				p.write(w, msg, timestamps)
			}
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "Follow log output")
	f.Int64VarP(&tail, "tail", "n", -1, "Number of lines to show from the end of the logs (-1 for all)")
	f.BoolVarP(&timestamps, "timestamps", "t", false, "Show timestamps")
	f.BoolVar(&noTrunc, "no-trunc", false, "Do not truncate task IDs")
	return cmd
}

// logPrefixer writes log lines under docker's prefix,
// `<service>.<slot>.<task ID>@<node>`, padded to the width of the widest
// prefix of the service's tasks so that the lines align.
type logPrefixer struct {
	service string
	nodes   map[string]string // ID → name
	width   int
	noTrunc bool
}

func newLogPrefixer(ctx context.Context, ctl skiffpb.ControlClient, sv *skiffpb.Service, noTrunc bool) (*logPrefixer, error) {
	p := &logPrefixer{service: sv.GetSpec().GetName(), nodes: map[string]string{}, noTrunc: noTrunc}
	nodes, err := ctl.ListNodes(ctx, &skiffpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	for _, n := range nodes.GetNodes() {
		p.nodes[n.GetId()] = nodeName(n)
	}
	tasks, err := ctl.ListTasks(ctx, &skiffpb.ListTasksRequest{Service: sv.GetId()})
	if err != nil {
		return nil, err
	}
	for _, t := range tasks.GetTasks() {
		p.width = max(p.width, len(p.prefix(t.GetId(), t.GetSlot(), t.GetNodeId())))
	}
	return p, nil
}

func (p *logPrefixer) prefix(taskID string, slot uint64, nodeID string) string {
	node := p.nodes[nodeID]
	if node == "" {
		node = shortID(nodeID, p.noTrunc)
	}
	return fmt.Sprintf("%s.%d.%s@%s", p.service, slot, shortID(taskID, p.noTrunc), node)
}

// write prints each line of a message under the prefix.
func (p *logPrefixer) write(w io.Writer, msg *skiffpb.LogMessage, timestamps bool) {
	prefix := fmt.Sprintf("%-*s |", p.width, p.prefix(msg.GetTaskId(), msg.GetSlot(), msg.GetNodeId()))
	if timestamps {
		prefix += " " + time.Unix(0, msg.GetTimestamp()).UTC().Format(time.RFC3339Nano)
	}
	data := bytes.TrimSuffix(msg.GetData(), []byte("\n"))
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		fmt.Fprintf(w, "%s %s\n", prefix, line)
	}
}
