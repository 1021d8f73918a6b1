package identity

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// Renewer keeps a node's certificate from expiring: it asks a manager for a
// new one when two thirds of the current one's life has passed (with
// jitter, so that a thousand nodes that joined together do not renew
// together), swaps it into the node's Keypair, and writes it to disk.
// Connections already open keep their session; new handshakes present the
// new certificate.
type Renewer struct {
	DataDir string
	Pool    *x509.CertPool
	Keypair *ca.Keypair
	// Managers lists the managers' API addresses to ask, the leader first
	// when it is known.
	Managers func() []string
	Logger   *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Renewed, when set, is told each new certificate's expiry.
	Renewed func(notAfter time.Time)
}

// retryRenew is how soon a failed renewal is tried again.
const retryRenew = 5 * time.Second

// Run renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	for {
		wait := r.due().Sub(r.Now())
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := r.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			left := r.Keypair.Leaf().NotAfter.Sub(r.Now())
			r.Logger.Warn("certificate renewal failed; trying again", "error", err, "expires_in", left.Round(time.Second))
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryRenew):
			}
		}
	}
}

// due is when the current certificate should be renewed: between 2/3 and
// 3/4 of its life.
func (r *Renewer) due() time.Time {
	leaf := r.Keypair.Leaf()
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(life * 2 / 3)
	return at.Add(time.Duration(rand.Int64N(int64(life/12) + 1)))
}

// renew asks the managers in turn for a new certificate.
func (r *Renewer) renew(ctx context.Context) error {
	b, err := ca.ReadBundle(Dir(r.DataDir))
	if err != nil {
		return err
	}
	csr, err := ca.CSRFor(b.Key)
	if err != nil {
		return err
	}
	var last error = fmt.Errorf("no manager known")
	for _, addr := range r.Managers() {
		resp, err := r.ask(ctx, addr, csr)
		if err != nil {
			last = fmt.Errorf("manager %s: %w", addr, err)
			continue
		}
		b.Cert = resp.GetCert()
		if err := r.Keypair.Set(ca.WithCA(b.Cert, b.CA), b.Key); err != nil {
			return fmt.Errorf("the renewed certificate: %w", err)
		}
		if err := ca.WriteBundle(Dir(r.DataDir), b); err != nil {
			return err
		}
		if len(resp.GetGossipKeys()) > 0 {
			if err := saveKeys(Dir(r.DataDir), resp.GetGossipKeys()); err != nil {
				return err
			}
		}
		notAfter := r.Keypair.Leaf().NotAfter
		r.Logger.Info("certificate renewed", "expires", notAfter.Format(time.RFC3339))
		if r.Renewed != nil {
			r.Renewed(notAfter)
		}
		return nil
	}
	return last
}

func (r *Renewer) ask(ctx context.Context, addr string, csr []byte) (*skiffpb.IssueCertificateResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(r.Pool, r.Keypair, ca.RoleManager))))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return skiffpb.NewNodeCAClient(conn).RenewCertificate(ctx, &skiffpb.RenewCertificateRequest{Csr: csr})
}
