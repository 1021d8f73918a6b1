package compose

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	skiffpb "github.com/skiffhq/skiff/proto"
)

// mounts converts volumes (bind, named or anonymous volume, tmpfs) in the
// order written, then the tmpfs key's mounts.
func (c *converter) mounts(s types.ServiceConfig, path []string) []*skiffpb.Mount {
	var out []*skiffpb.Mount
	for i, v := range s.Volumes {
		vp := at(path, "volumes", strconv.Itoa(i))
		m := &skiffpb.Mount{Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeBind:
			m.Type = skiffpb.MountType_MOUNT_TYPE_BIND
			// The Compose Specification creates a missing host path unless
			// told not to; the short syntax sets that explicitly.
			m.BindCreateHostPath = true
			if v.Bind != nil {
				m.BindPropagation = v.Bind.Propagation
				m.BindCreateHostPath = bool(v.Bind.CreateHostPath)
			}
		case types.VolumeTypeVolume:
			m.Type = skiffpb.MountType_MOUNT_TYPE_VOLUME
			if v.Volume != nil {
				m.VolumeNoCopy = v.Volume.NoCopy
				m.VolumeLabels = v.Volume.Labels
			}
			if v.Source != "" { // else an anonymous volume
				c.namedVolume(m, v.Source)
			}
		case types.VolumeTypeTmpfs:
			m.Type = skiffpb.MountType_MOUNT_TYPE_TMPFS
			if v.Tmpfs != nil {
				m.TmpfsSizeBytes = int64(v.Tmpfs.Size)
				m.TmpfsMode = v.Tmpfs.Mode
			}
		default:
			c.errorf(at(vp, "type"), "volume %s: type %q is not supported: use a bind mount, a named volume or tmpfs", v.Target, v.Type)
			continue
		}
		out = append(out, m)
	}
	for _, t := range s.Tmpfs {
		out = append(out, c.tmpfs(t, at(path, "tmpfs")))
	}
	return out
}

// namedVolume fills in a named volume's options from the top-level volumes
// key. compose-go has checked that it is declared, and named it
// <stack>_<key> unless the file gives a name or marks it external, as
// docker stack deploy does.
func (c *converter) namedVolume(m *skiffpb.Mount, key string) {
	c.usedVolumes[key] = true
	vol := c.project.Volumes[key]
	if vol.Name != "" {
		m.Source = vol.Name
	}
	if vol.External {
		return // it exists on the nodes already; its options are not ours
	}
	m.VolumeDriver = vol.Driver
	m.VolumeDriverOpts = vol.DriverOpts
	if len(vol.Labels) > 0 {
		labels := maps.Clone(vol.Labels)
		maps.Copy(labels, m.VolumeLabels) // the mount's own labels win
		m.VolumeLabels = labels
	}
}

// checkVolumes warns about the keys of used volumes that skiff ignores.
func (c *converter) checkVolumes() {
	for _, key := range slices.Sorted(maps.Keys(c.usedVolumes)) {
		findUnmapped(reflect.ValueOf(c.project.Volumes[key]), volumeKeys, []string{"volumes", key}, c.unsupported)
	}
}

// tmpfs converts an entry of the tmpfs key: a path, optionally followed by
// Docker's mount options, as in "/run:size=64k,mode=1777".
func (c *converter) tmpfs(entry string, path []string) *skiffpb.Mount {
	target, opts, _ := strings.Cut(entry, ":")
	m := &skiffpb.Mount{Type: skiffpb.MountType_MOUNT_TYPE_TMPFS, Target: target}
	for opt := range strings.SplitSeq(opts, ",") {
		if opt == "" {
			continue
		}
		name, value, _ := strings.Cut(opt, "=")
		switch name {
		case "size":
			var size types.UnitBytes
			if err := size.DecodeMapstructure(value); err != nil {
				c.errorf(path, "tmpfs %s: size %q is not a size (e.g. 64m)", target, value)
			}
			m.TmpfsSizeBytes = int64(size)
		case "mode":
			mode, err := strconv.ParseUint(value, 8, 32)
			if err != nil {
				c.errorf(path, "tmpfs %s: mode %q is not an octal file mode (e.g. 1777)", target, value)
			}
			m.TmpfsMode = uint32(mode)
		default:
			c.warnf(path, "tmpfs %s: ignoring unsupported option %q", target, opt)
		}
	}
	return m
}
