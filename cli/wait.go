package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	skiffpb "github.com/skiffhq/skiff/proto"
)

const (
	// redrawEvery batches the events of a busy rollout into one redraw.
	redrawEvery = 100 * time.Millisecond
	// confirmEvery spaces out the authoritative checks that a converged
	// looking model must pass (see confirm).
	confirmEvery = 500 * time.Millisecond
	// maxResubscribeDelay caps the pause between re-subscriptions while no
	// manager can serve a watch.
	maxResubscribeDelay = 2 * time.Second
)

// errNotYet is confirm's answer while the cluster has not converged.
var errNotYet = errors.New("not converged yet")

// wait follows g on the Watch stream, drawing its progress, until it is
// reached, it fails, or timeout passes. A stream that ends with
// Unavailable (a manager went away, or the watch fell behind) is opened
// again, from a fresh model.
func (a *app) wait(ctx context.Context, g goal, timeout time.Duration) error {
	ctl, err := a.control()
	if err != nil {
		return err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	m := newModel()
	r := newRenderer(a.stdout(), a.env.Terminal)
	delay := 100 * time.Millisecond
	var last report
	// broken is why the last stream broke, while no stream has worked
	// since: a timeout then says the managers went away, not only that
	// the tasks did not converge.
	var broken error
	for {
		done, rep, err := a.follow(ctx, ctl, g, m, r)
		if rep.overall != "" {
			// This stream worked; its report is the latest word, even if
			// a later one breaks before it says anything.
			last, broken = rep, nil
		}
		switch {
		case done:
			fmt.Fprintln(a.stdout(), g.doneMessage())
			return nil
		case parent.Err() != nil:
			return fmt.Errorf("interrupted; %s", g.interruptHint())
		case ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded:
			// The manager may end the stream at the deadline a moment
			// before the local timer fires; either way time is up.
			if last.overall == "" {
				last = g.evaluate(m)
			}
			msg := fmt.Sprintf("%s within %s", g.timeoutMessage(), timeout)
			if last.missing != "" {
				msg += ": " + last.missing
			}
			if broken != nil {
				msg += "; watching it failed: " + broken.Error()
			}
			return errors.New(msg)
		case status.Code(err) == codes.Unavailable || errors.Is(err, io.EOF):
			broken = err
			a.conn.rotate()
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			delay = min(2*delay, maxResubscribeDelay)
			m.reset()
		default:
			return err
		}
	}
}

// follow runs one Watch stream. It returns done once the model reaches
// the goal and the cluster confirms it, or the error that ended the
// stream or the goal.
func (a *app) follow(ctx context.Context, ctl skiffpb.ControlClient, g goal, m *model, r renderer) (bool, report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ctl.Watch(ctx, g.watch())
	if err != nil {
		return false, report{}, err
	}
	events := make(chan *skiffpb.WatchEvent)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()

	tick := time.NewTicker(redrawEvery)
	defer tick.Stop()
	var rep report
	var lastConfirm time.Time
	// Draw at the first tick even if the watch sent nothing at all.
	dirty := true
	for {
		select {
		case ev := <-events:
			m.apply(ev)
			dirty = true
		case err := <-errc:
			return false, rep, err
		case <-tick.C:
			if !dirty && !(rep.done && time.Since(lastConfirm) >= confirmEvery) {
				continue
			}
			dirty = false
			rep = g.evaluate(m)
			r.draw(rep)
			if rep.fatal != nil {
				return false, rep, rep.fatal
			}
			if !rep.done || time.Since(lastConfirm) < confirmEvery {
				continue
			}
			lastConfirm = time.Now()
			switch err := a.confirm(ctx, ctl, g); {
			case err == nil:
				return true, rep, nil
			case !errors.Is(err, errNotYet):
				return false, rep, err
			}
		}
	}
}

// confirm checks a goal against a fresh read of the cluster. A watch
// sends its first snapshot as a stream of single objects, with nothing to
// mark the snapshot's end, so a model can look converged while half of
// the snapshot is still on its way; the lists are whole.
func (a *app) confirm(ctx context.Context, ctl skiffpb.ControlClient, g goal) error {
	m, err := g.load(ctx, ctl)
	if err != nil {
		return err
	}
	if rep := g.evaluate(m); !rep.done {
		return errNotYet
	}
	return nil
}

// loadNodes starts a model with every node.
func loadNodes(ctx context.Context, ctl skiffpb.ControlClient) (*model, error) {
	m := newModel()
	resp, err := ctl.ListNodes(ctx, &skiffpb.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	for _, n := range resp.GetNodes() {
		m.nodes[n.GetId()] = n
	}
	return m, nil
}

// waitFlags are the flags of commands that wait for the cluster to
// converge.
type waitFlags struct {
	detach  bool
	timeout time.Duration
}

// defaultWaitTimeout is how long a rollout may take before the CLI gives
// up on it (the rollout itself goes on).
const defaultWaitTimeout = 3 * time.Minute

func (w *waitFlags) register(cmd *cobra.Command, until string) {
	cmd.Flags().BoolVarP(&w.detach, "detach", "d", false, "Exit immediately instead of waiting "+until)
	cmd.Flags().DurationVar(&w.timeout, "timeout", defaultWaitTimeout, "How long to wait "+until+" before failing")
}
