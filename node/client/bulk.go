package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// CreateBulkJob issues a bulk job on this node and returns it as it
// starts.
func (c *Client) CreateBulkJob(ctx context.Context, nb NewBulkJob) (*BulkJob, error) {
	var out BulkJob
	if err := c.do(ctx, http.MethodPost, "/api/v1/jobs", nil, nb, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetBulkJob returns a bulk job with its counters here and per node
// below.
func (c *Client) GetBulkJob(ctx context.Context, id string) (*BulkJob, error) {
	p, err := idPath("/api/v1/jobs/", id, "")
	if err != nil {
		return nil, err
	}
	var out BulkJob
	if err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelBulkJob cancels a bulk job here and below, and returns it.
func (c *Client) CancelBulkJob(ctx context.Context, id string) (*BulkJob, error) {
	return c.controlBulkJob(ctx, id, "/cancel")
}

// BulkFailures returns a page of a bulk job's failed devices; after is
// the Next of the previous page ("" for the first), limit 0 the server's
// default.
func (c *Client) BulkFailures(ctx context.Context, id, after string, limit int) (*BulkFailurePage, error) {
	p, err := idPath("/api/v1/jobs/", id, "/failures")
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	if after != "" {
		v.Set("after", after)
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out BulkFailurePage
	if err := c.do(ctx, http.MethodGet, p, v, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PauseBulkJob holds a bulk job here and below: no new device jobs.
func (c *Client) PauseBulkJob(ctx context.Context, id string) (*BulkJob, error) {
	return c.controlBulkJob(ctx, id, "/pause")
}

// ResumeBulkJob lifts every hold of a bulk job here and below.
func (c *Client) ResumeBulkJob(ctx context.Context, id string) (*BulkJob, error) {
	return c.controlBulkJob(ctx, id, "/resume")
}

// RetryBulkJob runs a bulk job's failed devices again, here and below.
func (c *Client) RetryBulkJob(ctx context.Context, id string) (*BulkJob, error) {
	return c.controlBulkJob(ctx, id, "/retry")
}

func (c *Client) controlBulkJob(ctx context.Context, id, action string) (*BulkJob, error) {
	p, err := idPath("/api/v1/jobs/", id, action)
	if err != nil {
		return nil, err
	}
	var out BulkJob
	if err := c.do(ctx, http.MethodPost, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListBulkJobs returns a page of the bulk jobs the caller may see,
// newest first; before is the Next of the previous page ("" for the
// first), limit 0 the server's default.
func (c *Client) ListBulkJobs(ctx context.Context, before string, limit int) (*BulkJobPage, error) {
	v := url.Values{"bulk": {"true"}}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	if before != "" {
		v.Set("before", before)
	}
	var out BulkJobPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/jobs", v, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
