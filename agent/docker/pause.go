package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
)

// The sandbox ("pause") container holds a task's network namespace while
// the agent plumbs it, before the task's own container joins it. Its image
// must never need a registry, so the agent makes it: a tar holding one
// static program, imported into the local engine.
//
// The program is 129 bytes of x86-64: an ELF header, one loadable segment,
// and a loop around the pause(2) system call. Generating it here rather than
// building a Go binary keeps the image tiny and the agent a single file,
// with nothing to find on disk at run time. It installs no signal handlers;
// as PID 1 of its container it ignores SIGTERM, so the executor always
// removes sandboxes with a kill.

// pauseImageRef names the sandbox image by the hash of its content, so an
// agent of another version never mistakes an older image for its own.
func pauseImageRef() string {
	sum := sha256.Sum256(pauseProgram())
	return "skiff/pause:" + hex.EncodeToString(sum[:6])
}

// pauseProgram returns the static ELF executable described above.
func pauseProgram() []byte {
	const (
		base       = 0x400000
		ehdrSize   = 64
		phdrSize   = 56
		codeOffset = ehdrSize + phdrSize
	)
	code := []byte{
		0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34 (SYS_pause)
		0x0f, 0x05, // syscall
		0xeb, 0xf7, // jmp back to mov (-9)
	}
	size := uint64(codeOffset + len(code))

	var b bytes.Buffer
	// ELF header.
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0 /* System V */})
	b.Write(make([]byte, 8)) // padding of e_ident
	le := binary.LittleEndian
	w := func(v any) { _ = binary.Write(&b, le, v) } // a bytes.Buffer never fails
	w(uint16(2))                                     // e_type: ET_EXEC
	w(uint16(0x3e))                                  // e_machine: x86-64
	w(uint32(1))                                     // e_version
	w(uint64(base + codeOffset))                     // e_entry
	w(uint64(ehdrSize))                              // e_phoff
	w(uint64(0))                                     // e_shoff: no sections
	w(uint32(0))                                     // e_flags
	w(uint16(ehdrSize))                              // e_ehsize
	w(uint16(phdrSize))                              // e_phentsize
	w(uint16(1))                                     // e_phnum
	w(uint16(0))                                     // e_shentsize
	w(uint16(0))                                     // e_shnum
	w(uint16(0))                                     // e_shstrndx
	// Program header: the whole file, loaded read+execute at base.
	w(uint32(1))      // p_type: PT_LOAD
	w(uint32(5))      // p_flags: PF_R|PF_X
	w(uint64(0))      // p_offset
	w(uint64(base))   // p_vaddr
	w(uint64(base))   // p_paddr
	w(size)           // p_filesz
	w(size)           // p_memsz
	w(uint64(0x1000)) // p_align
	b.Write(code)
	return b.Bytes()
}

// ensurePauseImage imports the sandbox image unless the engine has it.
func (e *Executor) ensurePauseImage(ctx context.Context) (string, error) {
	ref := pauseImageRef()
	if runtime.GOARCH != "amd64" {
		return "", fmt.Errorf("network sandboxes need an amd64 host; this agent runs on %s", runtime.GOARCH)
	}
	if _, err := e.client.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect sandbox image: %w", err)
	}
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	prog := pauseProgram()
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o555, Size: int64(len(prog)), Typeflag: tar.TypeReg}); err != nil {
		return "", fmt.Errorf("build sandbox image: %w", err)
	}
	if _, err := tw.Write(prog); err != nil {
		return "", fmt.Errorf("build sandbox image: %w", err)
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("build sandbox image: %w", err)
	}
	rc, err := e.client.ImageImport(ctx, image.ImportSource{Source: &tarball, SourceName: "-"}, ref,
		image.ImportOptions{Changes: []string{`CMD ["/pause"]`}})
	if err != nil {
		return "", fmt.Errorf("import sandbox image: %w", err)
	}
	defer rc.Close()
	if err := drainPull(rc); err != nil {
		return "", fmt.Errorf("import sandbox image: %w", err)
	}
	e.log.Info("imported sandbox image", "image", ref)
	return ref, nil
}
