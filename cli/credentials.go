package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/credentials"

	"github.com/skiffhq/skiff/ca"
)

// localManagerAdmin is the admin bundle of a manager installed as
// docs/install.md says (--data-dir /var/lib/skiff/manager); the CLI uses it
// when run as a user who can read it, on that manager's host.
const localManagerAdmin = "/var/lib/skiff/manager/admin"

// tlsDirs lists the folders the CLI takes its credentials from, in order,
// and whether the first was asked for explicitly (--tls-dir or
// SKIFF_TLS_DIR), in which case it is the only one.
func (a *app) tlsDirs() (dirs []string, explicit bool) {
	switch {
	case a.tlsDirFlag != "":
		return []string{a.tlsDirFlag}, true
	case a.env.getenv("SKIFF_TLS_DIR") != "":
		return []string{a.env.getenv("SKIFF_TLS_DIR")}, true
	}
	if home := a.env.getenv("HOME"); home != "" {
		dirs = append(dirs, filepath.Join(home, ".skiff", "tls"))
	}
	return append(dirs, localManagerAdmin), false
}

// transportCredentials is the admin certificate the CLI presents, and the
// CA it checks managers against.
func (a *app) transportCredentials() (credentials.TransportCredentials, error) {
	dirs, explicit := a.tlsDirs()
	for _, dir := range dirs {
		b, err := ca.ReadBundle(dir)
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("credentials in %s: %w (it must hold ca.pem, cert.pem and key.pem)", dir, err)
		}
		creds, err := b.ClientCredentials(ca.RoleManager)
		if err != nil {
			return nil, fmt.Errorf("credentials in %s: %w", dir, err)
		}
		return creds, nil
	}
	return nil, fmt.Errorf("no credentials found in %s: the CLI needs the admin bundle (ca.pem, cert.pem, key.pem) "+
		"that the first manager wrote to <data-dir>/admin/; copy it to ~/.skiff/tls, or point --tls-dir or SKIFF_TLS_DIR at it",
		strings.Join(dirs, " or "))
}
