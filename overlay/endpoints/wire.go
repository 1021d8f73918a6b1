package endpoints

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/skiffhq/skiff/overlay"
)

// The wire format of every message, broadcast or push/pull state, is one
// version byte followed by a JSON object {"r": [record, …]}. JSON keeps the
// messages readable in a packet capture and lets fields be added without a
// version bump (unknown fields are ignored); a change that old readers would
// misread must bump wireVersion, and readers drop versions they do not know.
// A broadcast carries one record, a push/pull state all of them.
const wireVersion byte = 1

// MaxRecordSize is the largest encoded broadcast, in bytes. Memberlist
// piggybacks broadcasts on UDP packets of 1400 bytes, some of which its own
// messages and framing use; a record that did not fit would never be sent,
// so Publish refuses it instead.
const MaxRecordSize = 1024

// ErrTooLarge is wrapped by Publish's error for an endpoint whose record
// would not fit in a broadcast.
var ErrTooLarge = errors.New("endpoint record too large for a gossip broadcast")

// wireRecord is a record as encoded. Short keys keep a typical task's
// record around 250 bytes. Node is not sent: it is always the origin.
type wireRecord struct {
	Network string     `json:"n"`
	IP      netip.Addr `json:"ip"`
	Clock   uint64     `json:"c"`
	Origin  string     `json:"o"`
	Deleted bool       `json:"d,omitempty"`

	VNI       uint32            `json:"vni,omitempty"`
	VTEP      netip.Addr        `json:"vtep,omitzero"`
	TaskID    string            `json:"task,omitempty"`
	Service   string            `json:"svc,omitempty"`
	Stack     string            `json:"stack,omitempty"`
	ShortName string            `json:"short,omitempty"`
	Aliases   []string          `json:"aliases,omitempty"`
	Links     map[string]string `json:"links,omitempty"`
	Published []wirePort        `json:"pub,omitempty"`
}

// wirePort is a published port: protocol, published and target port.
type wirePort struct {
	Protocol  string `json:"p"`
	Published uint16 `json:"pub"`
	Target    uint16 `json:"t"`
}

type wireMessage struct {
	Records []wireRecord `json:"r"`
}

func toWire(r record) wireRecord {
	w := wireRecord{Network: r.network, IP: r.ip, Clock: r.clock, Origin: r.origin, Deleted: r.deleted}
	if !r.deleted {
		w.VNI, w.VTEP, w.TaskID = r.ep.VNI, r.ep.VTEP, r.ep.TaskID
		w.Service, w.Stack, w.ShortName = r.ep.Service, r.ep.Stack, r.ep.ShortName
		w.Aliases, w.Links = r.ep.Aliases, r.ep.Links
		for _, p := range r.ep.Published {
			w.Published = append(w.Published, wirePort{Protocol: p.Protocol, Published: p.Published, Target: p.Target})
		}
	}
	return w
}

func fromWire(w wireRecord) (record, error) {
	switch {
	case w.Network == "":
		return record{}, errors.New("record without a network")
	case !w.IP.IsValid():
		return record{}, errors.New("record without an address")
	case w.Origin == "":
		return record{}, errors.New("record without an origin")
	case w.Clock == 0:
		return record{}, errors.New("record without a clock")
	}
	r := record{key: key{w.Network, w.IP}, clock: w.Clock, origin: w.Origin, deleted: w.Deleted}
	if !w.Deleted {
		r.ep = overlay.Endpoint{
			NetworkID: w.Network, VNI: w.VNI, IP: w.IP, VTEP: w.VTEP, Node: w.Origin,
			TaskID: w.TaskID, Service: w.Service, Stack: w.Stack, ShortName: w.ShortName,
			Aliases: w.Aliases, Links: w.Links,
		}
		for _, p := range w.Published {
			r.ep.Published = append(r.ep.Published, overlay.Port{Protocol: p.Protocol, Published: p.Published, Target: p.Target})
		}
	}
	return r, nil
}

// encode writes records as one message.
func encode(recs ...record) ([]byte, error) {
	msg := wireMessage{Records: make([]wireRecord, len(recs))}
	for i, r := range recs {
		msg.Records[i] = toWire(r)
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode endpoint records: %w", err)
	}
	return append([]byte{wireVersion}, body...), nil
}

// decode reads a message. Invalid records are skipped and reported in the
// error alongside the valid ones, so one bad record cannot hide the rest of
// a push/pull state.
func decode(buf []byte) ([]record, error) {
	if len(buf) == 0 {
		return nil, errors.New("empty endpoint message")
	}
	if buf[0] != wireVersion {
		return nil, fmt.Errorf("endpoint message version %d, want %d", buf[0], wireVersion)
	}
	var msg wireMessage
	if err := json.Unmarshal(buf[1:], &msg); err != nil {
		return nil, fmt.Errorf("decode endpoint message: %w", err)
	}
	recs := make([]record, 0, len(msg.Records))
	var errs []error
	for _, w := range msg.Records {
		r, err := fromWire(w)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", w.Network, w.IP, err))
			continue
		}
		recs = append(recs, r)
	}
	return recs, errors.Join(errs...)
}
