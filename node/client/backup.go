package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/strata-dm/strata/apitypes"
)

// Backup asks the node for an online backup of its store (POST
// /api/v1/backup, system administrators only) and returns the backup
// file's bytes as they arrive. A transfer the node cut ends in an error,
// never in a clean end of file; the caller closes the reader.
func (c *Client) Backup(ctx context.Context) (io.ReadCloser, error) {
	hdr := http.Header{"Accept": {apitypes.BackupContentType}}
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/backup", url.Values{}, nil, hdr)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
