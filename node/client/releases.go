package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/strata-dm/strata/apitypes"
)

// Software releases (docs/software.md).
type (
	Release        = apitypes.Release
	SignedManifest = apitypes.SignedManifest
	Manifest       = apitypes.Manifest
	Artifact       = apitypes.Artifact
	UploadState    = apitypes.UploadState
)

func releasePath(name, version string) (string, error) {
	if !apitypes.ValidReleaseName(name) || !apitypes.ValidReleaseName(version) {
		return "", fmt.Errorf("client: release %q version %q: want 1 to %d letters, digits or . _ + - ~", name, version, apitypes.MaxReleaseName)
	}
	return "/api/v1/releases/" + name + "/" + version, nil
}

func artifactPath(name, version, sum string) (string, error) {
	p, err := releasePath(name, version)
	if err != nil {
		return "", err
	}
	if !apitypes.ValidSHA256(sum) {
		return "", fmt.Errorf("client: artifact %q: want a sha256 in lower-case hex", sum)
	}
	return p + "/artifacts/" + sum, nil
}

// Releases lists the releases the caller may see.
func (c *Client) Releases(ctx context.Context) ([]Release, error) {
	var out apitypes.ReleaseList
	if err := c.do(ctx, http.MethodGet, "/api/v1/releases", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Releases, nil
}

// Release returns one release.
func (c *Client) Release(ctx context.Context, name, version string) (*Release, error) {
	p, err := releasePath(name, version)
	if err != nil {
		return nil, err
	}
	var out Release
	if err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutRelease creates (created true) or extends the release sm signs.
func (c *Client) PutRelease(ctx context.Context, name, version string, sm *SignedManifest) (rel *Release, created bool, err error) {
	p, err := releasePath(name, version)
	if err != nil {
		return nil, false, err
	}
	var out Release
	status, err := c.doStatus(ctx, http.MethodPut, p, nil, sm, &out)
	if err != nil {
		return nil, false, err
	}
	return &out, status == http.StatusCreated, nil
}

// DeleteRelease deletes a release.
func (c *Client) DeleteRelease(ctx context.Context, name, version string) error {
	p, err := releasePath(name, version)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil, nil)
}

// UploadOffset returns how many bytes of an artifact the node holds and
// whether it holds all of them, verified.
func (c *Client) UploadOffset(ctx context.Context, name, version, sum string) (offset int64, complete bool, err error) {
	p, err := artifactPath(name, version, sum)
	if err != nil {
		return 0, false, err
	}
	resp, err := c.send(ctx, http.MethodHead, p, nil, nil, nil)
	if err != nil {
		return 0, false, err
	}
	resp.Body.Close()
	offset, err = strconv.ParseInt(resp.Header.Get(apitypes.UploadOffsetHeader), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("client: HEAD %s: no Upload-Offset", p)
	}
	return offset, resp.Header.Get("Accept-Ranges") == "bytes", nil
}

// UploadArtifact sends length bytes of body as an artifact's bytes from
// offset, streamed. An error that leaves part of them on the node is
// resumed by asking UploadOffset and sending the rest.
func (c *Client) UploadArtifact(ctx context.Context, name, version, sum string, offset int64, body io.Reader, length int64) (*UploadState, error) {
	p, err := artifactPath(name, version, sum)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url(p, nil), io.NopCloser(body))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(apitypes.UploadOffsetHeader, strconv.FormatInt(offset, 10))
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeError(resp)
	}
	var st UploadState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("client: PUT %s: decode answer: %w", p, err)
	}
	return &st, nil
}

// OpenArtifact downloads an artifact from offset (a Range request when
// offset > 0). The caller closes the reader.
func (c *Client) OpenArtifact(ctx context.Context, name, version, sum string, offset int64) (io.ReadCloser, error) {
	p, err := artifactPath(name, version, sum)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Accept": {"application/octet-stream"}}
	if offset > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.send(ctx, http.MethodGet, p, url.Values{}, nil, hdr)
	if err != nil {
		return nil, err
	}
	if offset > 0 && resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return nil, errors.New("client: the server ignored the range")
	}
	return resp.Body, nil
}

// Software across tiers (docs/software.md).
type (
	CacheTier   = apitypes.CacheTier
	StageResult = apitypes.StageResult
)

// StageRelease sends release name version to the nodes at peers
// (/peers/<name>...), which fetch its artifacts now.
func (c *Client) StageRelease(ctx context.Context, name, version string, peers []string) ([]StageResult, error) {
	p, err := releasePath(name, version)
	if err != nil {
		return nil, err
	}
	var out apitypes.StageResults
	if err := c.do(ctx, http.MethodPost, p+"/stage", nil, apitypes.StageRequest{Peers: peers}, &out); err != nil {
		return nil, err
	}
	return out.Staged, nil
}

// SoftwareCache returns the artifact cache of the node and of every node
// below it.
func (c *Client) SoftwareCache(ctx context.Context) ([]CacheTier, error) {
	var out apitypes.CacheTiers
	if err := c.do(ctx, http.MethodGet, "/api/v1/software/cache", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Tiers, nil
}
