package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Devices, enrollment and jobs (docs/api.md, "Devices and enrollment",
// "Jobs and function calls").

// CreateEnrollToken creates an enrollment token; its secret is in the
// answer only.
func (c *Client) CreateEnrollToken(ctx context.Context, t NewEnrollToken) (*CreatedEnrollToken, error) {
	body := struct {
		NewEnrollToken
		TTL string `json:"ttl,omitempty"`
	}{t, durationString(t.TTL)}
	var out CreatedEnrollToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/enrollment-tokens", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListEnrollTokens lists the enrollment tokens the caller may manage.
func (c *Client) ListEnrollTokens(ctx context.Context) ([]EnrollToken, error) {
	var out struct {
		Tokens []EnrollToken `json:"tokens"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/enrollment-tokens", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// RevokeEnrollToken revokes an enrollment token; devices enrolled with it
// keep working.
func (c *Client) RevokeEnrollToken(ctx context.Context, id string) error {
	p, err := idPath("/api/v1/enrollment-tokens/", id, "")
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil, nil)
}

// Enroll exchanges an enrollment token for a device's credentials. It
// sends no bearer token, whatever the client carries.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (*Enrollment, error) {
	var out Enrollment
	if err := c.WithToken("").do(ctx, http.MethodPost, "/api/v1/enroll", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListDevices lists the devices the caller may see, by id.
func (c *Client) ListDevices(ctx context.Context) ([]Device, error) {
	var out struct {
		Devices []Device `json:"devices"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Devices, nil
}

// GetDevice returns the device with the given id.
func (c *Client) GetDevice(ctx context.Context, id string) (*Device, error) {
	return c.device(ctx, http.MethodGet, id, "")
}

// RevokeDevice revokes a device's credentials, disconnects it and returns
// it.
func (c *Client) RevokeDevice(ctx context.Context, id string) (*Device, error) {
	return c.device(ctx, http.MethodPost, id, "/revoke")
}

// AllowDeviceEnroll lets a revoked device enroll again (it stays revoked
// until it does) and returns it.
func (c *Client) AllowDeviceEnroll(ctx context.Context, id string) (*Device, error) {
	return c.device(ctx, http.MethodPost, id, "/allow-enroll")
}

// device sends method to the device id's resource (suffix after the id)
// and returns the device in the answer.
func (c *Client) device(ctx context.Context, method, id, suffix string) (*Device, error) {
	p, err := idPath("/api/v1/devices/", id, suffix)
	if err != nil {
		return nil, err
	}
	var out Device
	if err := c.do(ctx, method, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CallFunction calls function name of the device context at path with
// args (nil: none) and waits up to wait for the job to end. status is 200
// when the returned job is final, 202 when it is not yet, and the API
// error's status (0 without an answer) when err is set.
func (c *Client) CallFunction(ctx context.Context, path, name string, args json.RawMessage, wait time.Duration) (Job, int, error) {
	return c.Call(ctx, path, name, Call{Args: args, Wait: wait})
}

// Call is CallFunction with every option of a call. ctx must outlast
// call.Wait.
func (c *Client) Call(ctx context.Context, path, name string, call Call) (Job, int, error) {
	body := struct {
		Args     json.RawMessage `json:"args,omitempty"`
		Wait     string          `json:"wait,omitempty"`
		TTL      string          `json:"ttl,omitempty"`
		Deadline *time.Time      `json:"deadline,omitempty"`
	}{Args: call.Args, Wait: durationString(call.Wait), TTL: durationString(call.TTL)}
	if !call.Deadline.IsZero() {
		d := call.Deadline.UTC()
		body.Deadline = &d
	}
	p, err := idPath("/api/v1/contexts"+contextPath(path)+"/functions/", name, "")
	if err != nil {
		return Job{}, 0, err
	}
	var j Job
	status, err := c.doStatus(ctx, http.MethodPost, p, nil, body, &j)
	if ae := (*APIError)(nil); errors.As(err, &ae) {
		status = ae.Status
	}
	if err != nil {
		return Job{}, status, err
	}
	return j, status, nil
}

// GetJob returns a job with its full history.
func (c *Client) GetJob(ctx context.Context, id string) (*Job, error) {
	p, err := idPath("/api/v1/jobs/", id, "")
	if err != nil {
		return nil, err
	}
	var out Job
	if err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetJobOn returns a job owned by the node below at node (the Node of a
// routed call's answer, e.g. /peers/eu/peers/plant7), read through the
// federation links: the whole job as its owner has it, with Path as seen
// from this node (an owner of an older version sends no history).
func (c *Client) GetJobOn(ctx context.Context, node, id string) (*Job, error) {
	p, err := idPath("/api/v1/jobs/", id, "")
	if err != nil {
		return nil, err
	}
	var out Job
	if err := c.do(ctx, http.MethodGet, p, url.Values{"node": {node}}, nil, &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		out.ID = out.Job
	}
	return &out, nil
}

// ListJobs returns a page of the jobs the caller may see, newest first.
func (c *Client) ListJobs(ctx context.Context, q JobQuery) (*JobPage, error) {
	v := url.Values{}
	if q.Path != "" {
		v.Set("path", contextPath(q.Path))
	}
	if q.Device != "" {
		v.Set("device", q.Device)
	}
	if q.State != "" {
		v.Set("state", string(q.State))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before != "" {
		v.Set("before", q.Before)
	}
	var out JobPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/jobs", v, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelJob cancels a job not yet final (a conflict once it is) and
// returns it.
func (c *Client) CancelJob(ctx context.Context, id string) (*Job, error) {
	p, err := idPath("/api/v1/jobs/", id, "/cancel")
	if err != nil {
		return nil, err
	}
	var out Job
	if err := c.do(ctx, http.MethodPost, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// idPath is prefix+id+suffix for an id (or function name) that is one URL
// path segment, which Client.url escapes; one with a slash would name
// another route.
func idPath(prefix, id, suffix string) (string, error) {
	if id == "" || strings.Contains(id, "/") {
		return "", fmt.Errorf("client: %q: want one non-empty path segment", id)
	}
	return prefix + id + suffix, nil
}
