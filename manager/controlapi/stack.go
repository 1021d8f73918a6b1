package controlapi

import (
	"context"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffhq/skiff/manager/allocator"
	"github.com/skiffhq/skiff/manager/state"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// validName is Docker's rule for stack, service and network names.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// DeployStack creates or updates a stack in place: new services are created,
// changed ones get a new spec version (which the orchestrator rolls out),
// unchanged ones are left alone, and with prune, services no longer in the
// spec are removed.
func (s *Server) DeployStack(ctx context.Context, req *skiffpb.DeployStackRequest) (*skiffpb.DeployStackResponse, error) {
	spec := req.GetSpec()
	if err := validateStack(spec); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	var (
		actions []*skiffpb.StoreAction
		changes []*skiffpb.ServiceChange
		stack   *skiffpb.Stack
		err     error
	)
	s.store.View(func(tx state.ReadTx) {
		if err = checkReplicas(tx.Cluster(), spec.GetServices()...); err != nil {
			return
		}
		if err = checkNameOwners(tx, spec); err != nil {
			return
		}
		if err = checkPortConflicts(tx, spec); err != nil {
			return
		}
		stack = tx.StackByName(spec.GetName())
		if stack == nil {
			stack = &skiffpb.Stack{Id: state.NewID(), Name: spec.GetName(), Labels: spec.GetLabels(), Meta: s.meta(nil)}
			actions = append(actions, putStack(stack))
		}
		var netActions []*skiffpb.StoreAction
		netActions, err = s.networkActions(tx, spec)
		if err != nil {
			return
		}
		actions = append(actions, netActions...)
		svcActions, svcChanges := s.serviceActions(tx, spec, req.GetPrune())
		actions = append(actions, svcActions...)
		changes = svcChanges
	})
	if err != nil {
		return nil, err
	}
	idx, err := s.propose(ctx, actions...)
	if err != nil {
		return nil, err
	}
	s.logger.Info("stack deployed", "stack", spec.GetName(), "index", idx, "actions", len(actions))
	return &skiffpb.DeployStackResponse{Stack: stack, Changes: changes, Index: idx}, nil
}

func putStack(st *skiffpb.Stack) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutStack{PutStack: st}}
}

func putService(sv *skiffpb.Service) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutService{PutService: sv}}
}

func putNetwork(n *skiffpb.Network) *skiffpb.StoreAction {
	return &skiffpb.StoreAction{Action: &skiffpb.StoreAction_PutNetwork{PutNetwork: n}}
}

// networkActions allocates a VNI and subnet for each network the stack
// declares that does not exist yet.
func (s *Server) networkActions(tx state.ReadTx, spec *skiffpb.StackSpec) ([]*skiffpb.StoreAction, error) {
	usedVNI := map[uint32]bool{}
	var usedSubnets []netip.Prefix
	for _, n := range tx.Networks() {
		usedVNI[n.GetVni()] = true
		if p, err := netip.ParsePrefix(n.GetSubnet()); err == nil {
			usedSubnets = append(usedSubnets, p)
		}
	}
	if tx.Cluster() == nil {
		// A new leader of a new cluster writes the cluster's settings
		// first thing; until it has, it is not done taking office, and a
		// deploy, refused before anything was written, may come again.
		return nil, skiffpb.NoLeaderError("the cluster is still being initialised; retry in a moment")
	}
	pool, err := allocator.ParsePool(tx.Cluster().GetDefaultAddrPool(), int(tx.Cluster().GetSubnetSize()))
	if err != nil {
		return nil, toStatus(err)
	}
	var out []*skiffpb.StoreAction
	for _, ns := range spec.GetNetworks() {
		if tx.NetworkByName(ns.GetName()) != nil {
			continue
		}
		var alloc allocator.Network
		var err error
		if ns.GetSubnet() != "" {
			var p netip.Prefix
			if p, err = netip.ParsePrefix(ns.GetSubnet()); err != nil {
				return nil, invalid("network %s: subnet %q: %v", ns.GetName(), ns.GetSubnet(), err)
			}
			if alloc, err = allocator.Pinned(p, usedSubnets); err != nil {
				return nil, invalid("network %s: %v", ns.GetName(), err)
			}
			alloc.VNI, err = allocator.NextVNI(usedVNI)
		} else {
			alloc, err = pool.Allocate(usedVNI, usedSubnets)
		}
		if err != nil {
			return nil, invalid("network %s: %v; remove unused stacks or choose a larger --default-addr-pool", ns.GetName(), err)
		}
		usedVNI[alloc.VNI] = true
		usedSubnets = append(usedSubnets, alloc.Subnet)
		out = append(out, putNetwork(&skiffpb.Network{
			Id: state.NewID(), Meta: s.meta(nil), Spec: ns,
			Vni: alloc.VNI, Subnet: alloc.Subnet.String(), Gateway: alloc.Gateway.String(),
		}))
	}
	return out, nil
}

// serviceActions diffs the spec's services against the stored ones.
func (s *Server) serviceActions(tx state.ReadTx, spec *skiffpb.StackSpec, prune bool) ([]*skiffpb.StoreAction, []*skiffpb.ServiceChange) {
	var actions []*skiffpb.StoreAction
	var changes []*skiffpb.ServiceChange
	inSpec := map[string]bool{}
	for _, ss := range spec.GetServices() {
		inSpec[ss.GetName()] = true
		old := tx.ServiceByName(ss.GetName())
		if old == nil {
			actions = append(actions, putService(&skiffpb.Service{
				Id: state.NewID(), Meta: s.meta(nil), Spec: ss, SpecVersion: 1,
			}))
			changes = append(changes, &skiffpb.ServiceChange{Name: ss.GetName(), Kind: skiffpb.ServiceChangeKind_SERVICE_CHANGE_CREATED})
			continue
		}
		// A compose file cannot carry force_update; keep the stored count
		// so that a redeploy does not read as a change.
		ss = proto.Clone(ss).(*skiffpb.ServiceSpec)
		ss.ForceUpdate = old.GetSpec().GetForceUpdate()
		if proto.Equal(ss, old.GetSpec()) {
			changes = append(changes, &skiffpb.ServiceChange{Name: ss.GetName(), Kind: skiffpb.ServiceChangeKind_SERVICE_CHANGE_UNCHANGED})
			continue
		}
		actions = append(actions, putService(s.withNewSpec(tx, old, ss)))
		changes = append(changes, &skiffpb.ServiceChange{Name: ss.GetName(), Kind: skiffpb.ServiceChangeKind_SERVICE_CHANGE_UPDATED})
	}
	if prune {
		for _, sv := range tx.ServicesByStack(spec.GetName()) {
			if !inSpec[sv.GetSpec().GetName()] {
				actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteService{DeleteService: sv.GetId()}})
				changes = append(changes, &skiffpb.ServiceChange{Name: sv.GetSpec().GetName(), Kind: skiffpb.ServiceChangeKind_SERVICE_CHANGE_REMOVED})
			}
		}
	}
	return actions, changes
}

// withNewSpec returns a copy of sv running spec at the next spec version.
// The old spec is kept while any task still refers to it: live tasks, so
// that the agents can always be sent the spec of the task they hold, and
// the finished tasks of the history, so that `service ps` can show what they
// ran. History is bounded per slot, so the kept specs are too.
func (s *Server) withNewSpec(tx state.ReadTx, sv *skiffpb.Service, spec *skiffpb.ServiceSpec) *skiffpb.Service {
	live := map[uint64]bool{}
	tx.EachTaskOfService(sv.GetId(), func(t *skiffpb.Task) bool {
		live[t.GetSpecVersion()] = true
		return true
	})
	var prev []*skiffpb.VersionedSpec
	for _, v := range sv.GetPreviousSpecs() {
		if live[v.GetVersion()] {
			prev = append(prev, v)
		}
	}
	if live[sv.GetSpecVersion()] {
		prev = append(prev, &skiffpb.VersionedSpec{Version: sv.GetSpecVersion(), Spec: sv.GetSpec()})
	}
	return &skiffpb.Service{
		Id:            sv.GetId(),
		Meta:          s.meta(sv.GetMeta()),
		Spec:          spec,
		SpecVersion:   sv.GetSpecVersion() + 1,
		PreviousSpecs: prev,
		Vips:          sv.GetVips(),
		UpdateStatus:  &skiffpb.UpdateStatus{State: skiffpb.UpdateState_UPDATE_STATE_UPDATING, StartedAt: s.now().UnixNano()},
	}
}

// RemoveStack deletes a stack with its services and networks. The
// orchestrator then shuts down and deletes the services' tasks.
func (s *Server) RemoveStack(ctx context.Context, req *skiffpb.RemoveStackRequest) (*skiffpb.RemoveStackResponse, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var actions []*skiffpb.StoreAction
	found := false
	s.store.View(func(tx state.ReadTx) {
		if st := tx.StackByName(req.GetName()); st != nil {
			found = true
			actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteStack{DeleteStack: st.GetId()}})
		}
		for _, sv := range tx.ServicesByStack(req.GetName()) {
			found = true
			actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteService{DeleteService: sv.GetId()}})
		}
		for _, n := range tx.Networks() {
			if n.GetSpec().GetStack() == req.GetName() {
				actions = append(actions, &skiffpb.StoreAction{Action: &skiffpb.StoreAction_DeleteNetwork{DeleteNetwork: n.GetId()}})
			}
		}
	})
	if !found {
		return nil, notFound("stack", req.GetName())
	}
	idx, err := s.propose(ctx, actions...)
	if err != nil {
		return nil, err
	}
	return &skiffpb.RemoveStackResponse{Index: idx}, nil
}

// ListStacks lists the stacks with their service counts.
func (s *Server) ListStacks(ctx context.Context, _ *skiffpb.ListStacksRequest) (*skiffpb.ListStacksResponse, error) {
	resp := &skiffpb.ListStacksResponse{}
	s.store.View(func(tx state.ReadTx) {
		for _, st := range tx.Stacks() {
			resp.Stacks = append(resp.Stacks, &skiffpb.StackSummary{Stack: st, Services: uint64(len(tx.ServicesByStack(st.GetName())))})
		}
	})
	sort.Slice(resp.Stacks, func(i, j int) bool { return resp.Stacks[i].GetStack().GetName() < resp.Stacks[j].GetStack().GetName() })
	return resp, nil
}

// validateStack checks what the CLI's compose loader cannot: names and the
// combination of fields.
func validateStack(spec *skiffpb.StackSpec) error {
	if spec == nil || spec.GetName() == "" {
		return invalid("a stack needs a name")
	}
	if !validName.MatchString(spec.GetName()) {
		return invalid("stack name %q is invalid: use letters, digits, '_', '.' and '-', starting with a letter or digit", spec.GetName())
	}
	if len(spec.GetServices()) == 0 {
		return invalid("stack %s has no services", spec.GetName())
	}
	networks := map[string]bool{}
	for _, n := range spec.GetNetworks() {
		if !strings.HasPrefix(n.GetName(), spec.GetName()+"_") || n.GetStack() != spec.GetName() {
			return invalid("network %q does not belong to stack %s", n.GetName(), spec.GetName())
		}
		networks[n.GetName()] = true
	}
	for _, ss := range spec.GetServices() {
		if err := validateService(ss); err != nil {
			return err
		}
		if ss.GetStack() != spec.GetName() || !strings.HasPrefix(ss.GetName(), spec.GetName()+"_") {
			return invalid("service %q does not belong to stack %s", ss.GetName(), spec.GetName())
		}
		for _, n := range ss.GetNetworks() {
			if !networks[n.GetTarget()] {
				return invalid("service %s: network %q is not declared in the stack", ss.GetName(), n.GetTarget())
			}
		}
	}
	return nil
}

// validateService checks one service spec.
func validateService(ss *skiffpb.ServiceSpec) error {
	if !validName.MatchString(ss.GetName()) {
		return invalid("service name %q is invalid", ss.GetName())
	}
	if ss.GetContainer().GetImage() == "" {
		return invalid("service %s has no image", ss.GetName())
	}
	if ss.GetMode() == skiffpb.ServiceMode_SERVICE_MODE_GLOBAL && ss.GetReplicas() != 0 {
		return invalid("service %s: replicas cannot be set for a global service", ss.GetName())
	}
	if err := validateConstraints(ss); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range ss.GetEndpoint().GetPorts() {
		if p.GetTargetPort() == 0 || p.GetTargetPort() > 65535 || p.GetPublishedPort() > 65535 {
			return invalid("service %s: port %d:%d is out of range", ss.GetName(), p.GetPublishedPort(), p.GetTargetPort())
		}
		if p.GetPublishedPort() == 0 {
			continue
		}
		key := p.GetProtocol().String() + "/" + itoa(p.GetPublishedPort())
		if seen[key] {
			return invalid("service %s publishes port %d/%s twice", ss.GetName(), p.GetPublishedPort(), protoName(p.GetProtocol()))
		}
		seen[key] = true
	}
	return nil
}

// DefaultMaxReplicas bounds one service's replicas unless the cluster says
// otherwise (skiff cluster update --max-replicas).
const DefaultMaxReplicas = 100_000

// maxReplicas is the bound on one service's replicas now in force.
func maxReplicas(c *skiffpb.Cluster) uint64 {
	if m := c.GetMaxReplicas(); m > 0 {
		return m
	}
	return DefaultMaxReplicas
}

// checkReplicas refuses a service with more replicas than the cluster
// allows: every replica is a task the leader builds and stores, and a
// typo of a few zeros would otherwise take each leader in turn down.
func checkReplicas(c *skiffpb.Cluster, services ...*skiffpb.ServiceSpec) error {
	limit := maxReplicas(c)
	for _, ss := range services {
		if n := ss.GetReplicas(); n > limit {
			return invalid("service %s: %d replicas is more than this cluster allows (%d); if that many is meant, raise the limit with `skiff cluster update --max-replicas N`",
				ss.GetName(), n, limit)
		}
	}
	return nil
}

// checkNameOwners refuses a stack whose services or networks would take
// over a name another stack owns. Names are <stack>_<name>, so stack a_b's
// service c and stack a's service b_c are both a_b_c: deploying a_b would
// silently move a's service into it, and removing a would delete a network
// a_b still uses.
func checkNameOwners(tx state.ReadTx, spec *skiffpb.StackSpec) error {
	for _, ss := range spec.GetServices() {
		if sv := tx.ServiceByName(ss.GetName()); sv != nil && sv.GetSpec().GetStack() != spec.GetName() {
			return status.Errorf(codes.AlreadyExists, "service name %s is already taken by stack %s's service; rename the stack or the service",
				ss.GetName(), sv.GetSpec().GetStack())
		}
	}
	for _, ns := range spec.GetNetworks() {
		if n := tx.NetworkByName(ns.GetName()); n != nil && n.GetSpec().GetStack() != spec.GetName() {
			return status.Errorf(codes.AlreadyExists, "network name %s is already taken by stack %s's network; rename the stack or the network",
				ns.GetName(), n.GetSpec().GetStack())
		}
	}
	return nil
}

// checkPortConflicts rejects a routing-mesh port that another stack's
// service already publishes: the mesh listens on every node, so the port is
// cluster-wide.
func checkPortConflicts(tx state.ReadTx, spec *skiffpb.StackSpec) error {
	owner := map[string]string{}
	for _, sv := range tx.Services() {
		if sv.GetSpec().GetStack() == spec.GetName() {
			continue
		}
		for _, p := range ingressPorts(sv.GetSpec()) {
			owner[p] = sv.GetSpec().GetName()
		}
	}
	mine := map[string]string{}
	for _, ss := range spec.GetServices() {
		for _, p := range ingressPorts(ss) {
			if o, ok := owner[p]; ok {
				return invalid("service %s: published port %s is already used by service %s", ss.GetName(), p, o)
			}
			if o, ok := mine[p]; ok {
				return invalid("service %s: published port %s is already used by service %s", ss.GetName(), p, o)
			}
			mine[p] = ss.GetName()
		}
	}
	return nil
}

func ingressPorts(ss *skiffpb.ServiceSpec) []string {
	var out []string
	for _, p := range ss.GetEndpoint().GetPorts() {
		if p.GetPublishMode() == skiffpb.PublishMode_PUBLISH_MODE_INGRESS && p.GetPublishedPort() != 0 {
			out = append(out, itoa(p.GetPublishedPort())+"/"+protoName(p.GetProtocol()))
		}
	}
	return out
}
