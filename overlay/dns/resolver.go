package dns

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/skiffhq/skiff/overlay"
)

// Resolver answers the names of a network for a querier.
type Resolver interface {
	// Lookup returns the addresses name has in the network for the
	// endpoint at querier, or none if the name is not the network's. The
	// name is case-insensitive and may end with a dot.
	Lookup(networkID string, querier netip.Addr, name string) []netip.Addr
}

// Source gives the live endpoints of a network, sorted by address:
// *endpoints.Table is one.
type Source interface {
	Endpoints(networkID string) []overlay.Endpoint
}

// tasksPrefix introduces the name of all of a service's tasks. Compose
// names cannot contain a dot, so it never clashes with a service name.
const tasksPrefix = "tasks."

// NewResolver returns the Resolver of compose names over the endpoints of
// src. For a querier in stack S, a name resolves, in this order:
//
//  1. as an alias of one of the querier's links (links: ["redis:db"]
//     makes db the addresses of S's service redis), for that querier only;
//  2. as a service's full name (S_web, or another stack's T_api), as the
//     short name of a service of S (web), or as a network alias of any
//     endpoint in the network; all that match are returned together;
//  3. as tasks.<name>, where name is a service's full or short name as in
//     2: the same addresses, since every task is answered for.
//
// A querier the table does not know yet (a task that has just started, or
// the host itself) has no links and no stack; it gets short names only
// where they are unambiguous, that is where they belong to a single stack.
func NewResolver(src Source) Resolver { return resolver{src} }

type resolver struct{ src Source }

func (r resolver) Lookup(networkID string, querier netip.Addr, name string) []netip.Addr {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" {
		return nil
	}
	eps := r.src.Endpoints(networkID)
	var self *overlay.Endpoint
	for i := range eps {
		if eps[i].IP == querier {
			self = &eps[i]
			break
		}
	}
	if addrs := linked(eps, self, name); len(addrs) > 0 {
		return addrs
	}
	if addrs := named(eps, self, name, true); len(addrs) > 0 {
		return addrs
	}
	if service, ok := strings.CutPrefix(name, tasksPrefix); ok {
		return named(eps, self, service, false)
	}
	return nil
}

// linked resolves name as one of the querier's link aliases.
func linked(eps []overlay.Endpoint, self *overlay.Endpoint, name string) []netip.Addr {
	if self == nil {
		return nil
	}
	for alias, target := range self.Links {
		if strings.EqualFold(alias, name) {
			return shortNamed(eps, self.Stack, target)
		}
	}
	return nil
}

// named resolves name as a service's full or short name, and, with
// aliases, as a network alias.
func named(eps []overlay.Endpoint, self *overlay.Endpoint, name string, aliases bool) []netip.Addr {
	var out []netip.Addr
	for _, e := range eps {
		if strings.EqualFold(e.Service, name) || (aliases && hasAlias(e, name)) {
			out = append(out, e.IP)
		}
	}
	// Short names last, and only those not matched already: an endpoint
	// can match both ways and is answered once.
	var short []netip.Addr
	if self != nil && self.Stack != "" {
		short = shortNamed(eps, self.Stack, name)
	} else {
		short = unambiguous(eps, name)
	}
	for _, a := range short {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// shortNamed returns the addresses of stack's service short.
func shortNamed(eps []overlay.Endpoint, stack, short string) []netip.Addr {
	var out []netip.Addr
	for _, e := range eps {
		if e.Stack != "" && strings.EqualFold(e.Stack, stack) && strings.EqualFold(e.ShortName, short) {
			out = append(out, e.IP)
		}
	}
	return out
}

// unambiguous returns the addresses of the services with short name short,
// if they all belong to one stack.
func unambiguous(eps []overlay.Endpoint, short string) []netip.Addr {
	var stack string
	for _, e := range eps {
		if e.Stack == "" || !strings.EqualFold(e.ShortName, short) {
			continue
		}
		if stack != "" && !strings.EqualFold(stack, e.Stack) {
			return nil
		}
		stack = e.Stack
	}
	if stack == "" {
		return nil
	}
	return shortNamed(eps, stack, short)
}

func hasAlias(e overlay.Endpoint, name string) bool {
	return slices.ContainsFunc(e.Aliases, func(a string) bool {
		return strings.EqualFold(strings.TrimSuffix(a, "."), name)
	})
}
