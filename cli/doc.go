// Package cli is skiff's command line: a cobra command tree over the
// managers' Control API, with docker's commands, columns and wording.
//
// The pieces, by file:
//   - root.go builds the command tree; Execute runs it against an Env, which
//     is all the CLI takes from its process, so tests run it in-process.
//   - client.go finds a manager that answers among --manager's addresses and
//     fails over to the next one; errors.go turns gRPC errors into the
//     messages users see, and usage errors into docker's wording.
//   - format.go renders lists (tables, -q, --format templates and json),
//     inspect.go renders objects as docker-style JSON documents, and
//     words.go holds docker's words for states, times and IDs.
//   - progress.go models what a Watch streams; rollout.go and drain.go are
//     the goals that judge the model (what converged, what is missing and
//     why); render.go draws their reports, and wait.go feeds the model from
//     the Watch stream until the goal is reached or the timeout passes.
//   - node.go, stack.go, service.go, tasks.go (the ps commands' rows),
//     logs.go, cluster.go and version.go are the commands.
//   - logging.go routes the warnings libraries log to stderr.
package cli
