// Package dns is the embedded DNS server that containers use as their
// nameserver. The agent runs one Server per network on each host, listening
// on the host's own address in that network (UDP and TCP, port 53), which
// is the nameserver written into the tasks' resolv.conf.
//
// A server answers, from the endpoint table, the names a task of a compose
// stack expects to resolve in that network: its stack's services by short
// name, any service by its full name (<stack>_<service>), tasks.<service>,
// the network aliases of endpoints, and the aliases the querying task's own
// links give. It knows the querier by the query's source address, which is
// the querier's own endpoint in the network. The table holds only running
// tasks, so a name answers with the addresses of the running tasks, all of
// them (endpoint_mode dnsrr), in a new random order for each answer so that
// clients that take the first address spread their load.
//
// Answers carry a short TTL (DefaultTTL, 2 s): a task that stops is
// withdrawn from the table within a gossip round, and a client that caches
// an answer should not keep using a dead address for long. Docker's
// embedded DNS uses 600 s and relies on its VIPs for failover; skiff
// answers with the task addresses themselves, so the cache must be short.
// Queries are cheap (they never leave the host), so the extra queries cost
// little.
//
// A name the table does not know is forwarded to the host's resolvers
// (HostUpstreams reads them from /etc/resolv.conf), and answered REFUSED if
// none answers within a short timeout, so a client moves on instead of
// waiting out its own. A known name asked for another type (AAAA above all)
// gets an empty NOERROR answer, not NXDOMAIN and not a forward, so a
// client that asks for both A and AAAA gets its IPv4 answer at once and
// does not conclude the name does not exist.
package dns
