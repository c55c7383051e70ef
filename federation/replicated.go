package federation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-dm/strata/model"
)

// On a replica of a cluster (Config.Replicated) the credentials an
// upstream link obtained by joining its consumer are durable state of the
// node, not of the machine: they go through the model, in a node-local
// record (never published), so that the replica that leads next dials the
// consumer as the same provider. The files under StateDir are a local
// copy, written from the record before each connection.

// recCreds holds, by upstream state folder (StateDirName), the files of
// a link's credentials.
const recCreds = "fed-creds"

// credsFiles are the files a link's credentials consist of.
var credsFiles = []string{fileCA, fileCert, fileKey, fileConsumer}

// credsRecord is the content of each credentials file, by name.
type credsRecord struct {
	Files map[string][]byte `json:"files"`
}

// saveCreds copies the link's credentials files into the model.
func (u *upstream) saveCreds() error {
	rec := credsRecord{Files: map[string][]byte{}}
	for _, f := range credsFiles {
		data, err := os.ReadFile(filepath.Join(u.dir, f))
		if err != nil {
			return fmt.Errorf("keeping the credentials of %s: %w", u.cfg.Address, err)
		}
		rec.Files[f] = data
	}
	put, err := putRecord(recCreds, StateDirName(u.cfg.Address), rec)
	if err != nil {
		return err
	}
	if _, err := u.s.model.Apply(u.ctx, put); err != nil {
		return fmt.Errorf("keeping the credentials of %s: %w", u.cfg.Address, err)
	}
	return nil
}

// restoreCreds writes the link's credentials files from the model, when
// it holds them and they differ from the files: another replica joined
// or renewed while it led. Without a record the files (if any) stay.
func (u *upstream) restoreCreds() error {
	var rec credsRecord
	err := getRecord(u.s.model, recCreds, StateDirName(u.cfg.Address), &rec)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the credentials of %s: %w", u.cfg.Address, err)
	}
	for _, f := range credsFiles {
		if len(rec.Files[f]) == 0 {
			return fmt.Errorf("the credentials of %s: %s missing in the record", u.cfg.Address, f)
		}
	}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return err
	}
	for _, f := range credsFiles {
		path := filepath.Join(u.dir, f)
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, rec.Files[f]) {
			continue
		}
		mode := os.FileMode(0o644)
		if f == fileKey {
			mode = 0o600
		}
		if err := writeFileAtomic(path, rec.Files[f], mode); err != nil {
			return err
		}
	}
	return nil
}

// KindPeer is the record kind of the providers joined to this node, for a
// replica's node to hand applied ones to Follow.
const KindPeer = recPeer

// Follow takes the records a replica of a cluster applied: a provider
// revoked through another replica has its link here (on the leader)
// closed at once, as Revoke does on the replica it ran on.
func (s *Service) Follow(es []model.Entry) {
	for i := range es {
		r := es[i].Mutation.Record
		if r == nil || r.Kind != recPeer || es[i].Mutation.Op != model.OpPutRecord {
			continue
		}
		var p peerRecord
		if json.Unmarshal(r.Value, &p) != nil || !p.Revoked {
			continue
		}
		s.mu.Lock()
		m := s.mounts[r.Key]
		s.mu.Unlock()
		if m != nil {
			m.setRevoked()
			m.disconnect(closeRevoked, "revoked")
		}
	}
}
