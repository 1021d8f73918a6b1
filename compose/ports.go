package compose

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// endpointMode converts deploy.endpoint_mode.
func (c *converter) endpointMode(s types.ServiceConfig, path []string) skiffpb.EndpointMode {
	if s.Deploy == nil {
		return skiffpb.EndpointMode_ENDPOINT_MODE_VIP
	}
	switch s.Deploy.EndpointMode {
	case "", "vip":
		return skiffpb.EndpointMode_ENDPOINT_MODE_VIP
	case "dnsrr":
		return skiffpb.EndpointMode_ENDPOINT_MODE_DNSRR
	}
	c.errorf(at(path, "deploy", "endpoint_mode"), "endpoint_mode %q is not valid: use vip or dnsrr", s.Deploy.EndpointMode)
	return skiffpb.EndpointMode_ENDPOINT_MODE_VIP
}

// ports converts the published ports. compose-go has already turned the
// short syntax into the long one and expanded ranges such as
// "8000-8001:80-81" into one port each.
func (c *converter) ports(s types.ServiceConfig, path []string) []*skiffpb.PortConfig {
	var out []*skiffpb.PortConfig
	for _, p := range s.Ports {
		pp := at(path, "ports", listItem)
		port := &skiffpb.PortConfig{Name: p.Name, TargetPort: p.Target}

		switch p.Protocol {
		case "", "tcp":
		case "udp":
			port.Protocol = skiffpb.Protocol_PROTOCOL_UDP
		default:
			c.errorf(at(pp, "protocol"), "port %d: protocol %q is not supported: use tcp or udp", p.Target, p.Protocol)
		}

		switch p.Mode {
		case "", "ingress":
		case "host":
			port.PublishMode = skiffpb.PublishMode_PUBLISH_MODE_HOST
		default:
			c.errorf(at(pp, "mode"), "port %d: mode %q is not valid: use ingress or host", p.Target, p.Mode)
		}

		published, err := publishedPort(p.Published)
		if err != nil {
			c.errorf(at(pp, "published"), "port %d: %v", p.Target, err)
		}
		port.PublishedPort = published
		out = append(out, port)
	}
	return out
}

// publishedPort parses a published port. Empty means none was given and
// the manager picks one, as Swarm does. A range is only valid as one port:
// compose-go has expanded ranges that pair with a target range, and a range
// left whole is a choice of host port that skiff does not make.
func publishedPort(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	first, err := parsePort(lo)
	if err != nil {
		return 0, err
	}
	if isRange {
		last, err := parsePort(hi)
		if err != nil {
			return 0, err
		}
		if last != first {
			return 0, fmt.Errorf("published port range %s is not supported for a single target port: publish a range of the same length as the target's (e.g. \"8000-8001:80-81\") or a single port", s)
		}
	}
	return first, nil
}

func parsePort(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("published port %q is not a port number (1-65535)", s)
	}
	return uint32(n), nil
}

// checkEndpoint applies Swarm's rule that dnsrr services have no virtual
// IP for the routing mesh to forward to.
func (c *converter) checkEndpoint(spec *skiffpb.ServiceSpec, path []string) {
	if spec.Endpoint.Mode != skiffpb.EndpointMode_ENDPOINT_MODE_DNSRR {
		return
	}
	for _, p := range spec.Endpoint.Ports {
		if p.PublishMode == skiffpb.PublishMode_PUBLISH_MODE_INGRESS {
			c.errorf(at(path, "ports"), "port %d is published in ingress mode, which endpoint_mode dnsrr cannot serve: set mode: host on the port or use endpoint_mode: vip", p.TargetPort)
			return
		}
	}
}

// checkPublishedPorts finds published ports that two services of the stack
// (or one service twice) would both need. An ingress port listens on every
// node, so it conflicts with any other use of that port; host ports
// conflict only within one service, whose tasks would each need the port
// twice, since the scheduler keeps different services' host ports apart.
func (c *converter) checkPublishedPorts(services []*skiffpb.ServiceSpec) {
	type key struct {
		port  uint32
		proto skiffpb.Protocol
	}
	type use struct {
		service string
		mode    skiffpb.PublishMode
	}
	seen := map[key][]use{}
	for _, svc := range services {
		short := strings.TrimPrefix(svc.Name, c.stack+"_")
		for _, p := range svc.Endpoint.Ports {
			if p.PublishedPort == 0 {
				continue
			}
			k := key{p.PublishedPort, p.Protocol}
			for _, u := range seen[k] {
				ingress := u.mode == skiffpb.PublishMode_PUBLISH_MODE_INGRESS || p.PublishMode == skiffpb.PublishMode_PUBLISH_MODE_INGRESS
				if !ingress && u.service != short {
					continue
				}
				if u.service == short {
					c.errorf([]string{"services", short, "ports"}, "published port %d/%s is published twice by this service: publish each port once",
						p.PublishedPort, protocolName(p.Protocol))
				} else {
					c.errorf([]string{"services", short, "ports"}, "published port %d/%s is also published by service %s: publish each port once per stack",
						p.PublishedPort, protocolName(p.Protocol), u.service)
				}
				break
			}
			seen[k] = append(seen[k], use{short, p.PublishMode})
		}
	}
}

func protocolName(p skiffpb.Protocol) string {
	if p == skiffpb.Protocol_PROTOCOL_UDP {
		return "udp"
	}
	return "tcp"
}
