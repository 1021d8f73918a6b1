package identity

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// keysFile holds the gossip keyring beside the certificate, one base64 key
// per line, the primary first.
const keysFile = "gossip.keys"

// SaveKeys writes the gossip keyring, the primary first, to the node's
// credentials folder under dataDir, where Load finds it: a node restarted
// after a rotation of the key starts its pool with the keyring it last
// had, not the one it joined with.
func SaveKeys(dataDir string, keys [][]byte) error {
	return saveKeys(Dir(dataDir), keys)
}

func saveKeys(dir string, keys [][]byte) error {
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, keysFile)
	if err := os.WriteFile(path+".tmp", b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write gossip keys: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("write gossip keys: %w", err)
	}
	return nil
}

func loadKeys(dir string) ([][]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, keysFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no gossip keys beside the certificate in %s: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read gossip keys: %w", err)
	}
	var keys [][]byte
	for _, line := range bytes.Fields(data) {
		k, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			return nil, fmt.Errorf("gossip keys in %s: %w", dir, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}
