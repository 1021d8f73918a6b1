package manager_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skiffhq/skiff/internal/testcluster"
	skiffpb "github.com/skiffhq/skiff/proto"
)

// TestFullDiskLosesNothing: a manager whose disk fills up refuses writes
// with an error that names the disk, and, once space is freed, carries on
// with every write it acknowledged before.
func TestFullDiskLosesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system for the data dir needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	// Registered before the cluster, so it runs after the cluster stops.
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	c := testcluster.NewIn(t, 1, dir)

	ctl := c.Control()
	deploy := func(name string) error {
		_, err := ctl.DeployStack(c.Ctx(), &skiffpb.DeployStackRequest{Spec: testcluster.Stack(name, 1)})
		return err
	}
	acknowledged := []string{"before"}
	if err := deploy("before"); err != nil {
		t.Fatalf("deploy on an empty disk: %v", err)
	}
	fill(t, filepath.Join(dir, "filler"))

	// The log's file may have room left inside it; writes fail once it
	// needs to grow.
	var refused error
	for i := 1; i <= 200 && refused == nil; i++ {
		name := fmt.Sprintf("full%d", i)
		if err := deploy(name); err != nil {
			refused = err
		} else {
			acknowledged = append(acknowledged, name)
		}
	}
	if refused == nil {
		t.Fatal("200 deploys succeeded on a full disk")
	}
	if status.Code(refused) != codes.ResourceExhausted {
		t.Errorf("the refusal's code is %s, want ResourceExhausted", status.Code(refused))
	}
	for _, want := range []string{"no space left on device", "--data-dir"} {
		if !strings.Contains(status.Convert(refused).Message(), want) {
			t.Errorf("the refusal %q does not say %q", refused, want)
		}
	}
	// Until the disk takes writes, every call says why there is no leader.
	c.Eventually(10*time.Second, func() error {
		_, err := ctl.ListServices(c.Ctx(), &skiffpb.ListServicesRequest{})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "cannot write its Raft log") {
			return fmt.Errorf("a call on a full disk answered %v", err)
		}
		return nil
	})

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, func() error { return deploy("after") })
	acknowledged = append(acknowledged, "after")
	resp, err := ctl.ListServices(c.Ctx(), &skiffpb.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, sv := range resp.GetServices() {
		have[sv.GetSpec().GetName()] = true
	}
	for _, name := range acknowledged {
		if !have[name+"_web"] {
			t.Errorf("service %s_web, acknowledged before the disk filled or after it was freed, is gone", name)
		}
	}
}

// fill writes zeros to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return
		}
	}
}
