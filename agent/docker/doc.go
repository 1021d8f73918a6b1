// Package docker implements the agent's Executor over a Docker engine.
//
// An Executor runs a node's tasks as ordinary containers of the local engine.
// It owns exactly the containers whose skiff.node label equals its node
// identity: it never lists, starts, stops or removes any other container, so
// several agents (or a human operator) can share one engine safely.
//
// The engine holds all the state. The executor keeps no record of what it
// created: every method looks the task's container up by its labels, which is
// what lets a restarted agent adopt the containers a previous run left behind.
//
// Translating a task's spec into the engine's container configuration is a
// pure function (containerConfig), kept apart from the code that talks to the
// engine so that it can be tested without one.
package docker
