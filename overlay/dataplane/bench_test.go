package dataplane

import (
	"fmt"
	"testing"
)

// BenchmarkAttach measures the per-task cost of plumbing a sandbox: "new"
// is a first Attach (the pair is created, enslaved, addressed and brought
// up), "again" an Attach of a task that is already attached (what a
// restarted agent pays per task), and "detach" the removal.
func BenchmarkAttach(b *testing.B) {
	requireRoot(b)
	hst := newHosts(b, 1, 1500)[0]
	must(b, hst.plane.EnsureNetwork(Network{VNI: 4096, HostAddr: mustPrefix("198.19.200.1/24")}))
	sandbox := newNetNS(b, "sb")
	att := func(i int) Attachment {
		return Attachment{TaskID: fmt.Sprintf("task%d", i), VNI: 4096, NetNSPath: sandbox, Addr: mustPrefix("198.19.200.10/24")}
	}

	b.Run("new", func(b *testing.B) {
		i := 0
		for b.Loop() {
			must(b, hst.plane.Attach(att(i)))
			b.StopTimer()
			must(b, hst.plane.Detach(att(i).TaskID))
			b.StartTimer()
			i++
		}
	})
	b.Run("again", func(b *testing.B) {
		must(b, hst.plane.Attach(att(0)))
		for b.Loop() {
			must(b, hst.plane.Attach(att(0)))
		}
		b.StopTimer()
		must(b, hst.plane.Detach(att(0).TaskID))
	})
	b.Run("detach", func(b *testing.B) {
		i := 0
		for b.Loop() {
			b.StopTimer()
			must(b, hst.plane.Attach(att(i)))
			b.StartTimer()
			must(b, hst.plane.Detach(att(i).TaskID))
			i++
		}
	})
}
