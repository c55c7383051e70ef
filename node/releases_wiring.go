package node

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/objects"
	"github.com/strata-dm/strata/node/releases"
)

// wireReleases opens the object store (objects.kind) and builds the
// releases service over it and the model. Partial uploads are staged in
// data_dir/uploads whatever the object store.
func (n *Node) wireReleases() error {
	cfg := &n.cfg
	keys, err := cfg.TrustedKeys()
	if err != nil {
		return err
	}
	dataDir := cfg.Path(cfg.DataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch cfg.Objects.Kind {
	case config.ObjectsS3:
		secret, err := cfg.ObjectsSecret()
		if err != nil {
			return err
		}
		n.objects, err = objects.NewS3(ctx, objects.S3Config{
			Endpoint: cfg.Objects.Endpoint, Bucket: cfg.Objects.Bucket, Region: cfg.Objects.Region,
			AccessKey: cfg.Objects.AccessKey, SecretKey: secret,
			PathStyle: cfg.Objects.PathStyle, Prefix: cfg.Objects.Prefix,
		})
		if err != nil {
			return err
		}
	default:
		dir := cfg.Path(cfg.Objects.Dir)
		if cfg.Objects.Dir == "" {
			dir = filepath.Join(dataDir, "objects")
		}
		if n.objects, err = objects.NewFS(dir); err != nil {
			return err
		}
	}
	budget, err := cfg.Software.CacheBudgetBytes()
	if err != nil {
		return err
	}
	rc := releases.Config{
		Records: n.model, Objects: n.objects, StagingDir: filepath.Join(dataDir, "uploads"),
		TrustedKeys: keys, Logger: n.log, Registerer: n.reg,
		CacheBudget: budget, Pinned: n.pinnedArtifacts,
	}
	if n.fed != nil {
		rc.Fetch = n.fed.Fetch
	}
	n.releases, err = releases.New(ctx, rc)
	if err != nil {
		return fmt.Errorf("releases: %w", err)
	}
	if len(keys) == 0 {
		n.log.Info("releases cannot be created: software.trusted_keys is empty")
	}
	return nil
}
