package endpoints

import (
	"github.com/hashicorp/memberlist"
)

// Delegate returns the memberlist delegate that carries the table through
// the pool: pass it as gossip.Config.Delegate. It does not provide node
// metadata; the gossip package does.
func (t *Table) Delegate() memberlist.Delegate { return delegate{t} }

type delegate struct{ t *Table }

// NodeMeta returns no metadata: the gossip package advertises the member's.
func (delegate) NodeMeta(int) []byte { return nil }

// NotifyMsg merges a broadcast record and relays it if it was news.
func (d delegate) NotifyMsg(buf []byte) {
	recs, err := decode(buf)
	if err != nil {
		d.t.logger.Warn("dropping bad endpoint records from a broadcast", "error", err)
	}
	d.t.merge(recs, true)
}

// GetBroadcasts hands memberlist the queued records that fit in limit.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.t.queue.GetBroadcasts(overhead, limit)
}

// LocalState is this host's side of a push/pull exchange: the whole table.
func (d delegate) LocalState(join bool) []byte {
	buf, err := d.t.state()
	if err != nil {
		d.t.logger.Error("cannot encode the endpoint table for push/pull", "error", err)
		return nil
	}
	return buf
}

// MergeRemoteState merges the other side of a push/pull exchange.
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return // the peer has no table (a manager) or nothing in it
	}
	recs, err := decode(buf)
	if err != nil {
		d.t.logger.Warn("dropping bad endpoint records from a push/pull state", "error", err)
	}
	d.t.merge(recs, false)
}

// state encodes every record for push/pull, tombstones and the hidden
// records of nodes that left included: a node coming back learns from them
// what its previous life published, so it can re-assert or withdraw it,
// and a receiver shows them only if it sees their node alive.
func (t *Table) state() ([]byte, error) {
	t.mu.Lock()
	var recs []record
	for _, byIP := range t.nets {
		for _, e := range byIP {
			recs = append(recs, e.rec)
		}
	}
	t.mu.Unlock()
	return encode(recs...)
}

// broadcast is one queued record. It is named by its key, so that queueing
// a newer record of the key drops the older one still waiting.
type broadcast struct {
	name string
	msg  []byte
}

func (t *Table) queueBroadcast(k key, msg []byte) {
	t.queue.QueueBroadcast(&broadcast{name: k.network + " " + k.ip.String(), msg: msg})
}

// Invalidates reports whether b supersedes other: same key.
func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*broadcast)
	return ok && o.name == b.name
}

// Name lets the queue find the superseded broadcast without a scan.
func (b *broadcast) Name() string { return b.name }

// Message is the encoded record.
func (b *broadcast) Message() []byte { return b.msg }

// Finished is called when the broadcast has been retransmitted enough.
func (b *broadcast) Finished() {}
