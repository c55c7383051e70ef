package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// Alert rules and alerts (docs/alerts.md).
type (
	AlertRule     = apitypes.AlertRule
	AlertSelector = apitypes.AlertSelector
	Alert         = apitypes.Alert
	AlertPage     = apitypes.AlertPage
)

// AlertQuery selects alerts: under Path (default /), in State, a page of
// Limit after After.
type AlertQuery struct {
	Path  string
	State string
	Limit int
	After string
}

// AlertRules lists the alert rules the caller sees.
func (c *Client) AlertRules(ctx context.Context) ([]AlertRule, error) {
	var out apitypes.AlertRuleList
	if err := c.do(ctx, http.MethodGet, "/api/v1/alert-rules", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Rules, nil
}

// CreateAlertRule creates a rule and returns it as stored.
func (c *Client) CreateAlertRule(ctx context.Context, r AlertRule) (*AlertRule, error) {
	var out AlertRule
	if err := c.do(ctx, http.MethodPost, "/api/v1/alert-rules", nil, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetAlertRule returns rule id.
func (c *Client) GetAlertRule(ctx context.Context, id string) (*AlertRule, error) {
	p, err := idPath("/api/v1/alert-rules/", id, "")
	if err != nil {
		return nil, err
	}
	var out AlertRule
	if err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteAlertRule deletes rule id.
func (c *Client) DeleteAlertRule(ctx context.Context, id string) error {
	p, err := idPath("/api/v1/alert-rules/", id, "")
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, p, nil, nil, nil)
}

// Alerts lists a page of alerts.
func (c *Client) Alerts(ctx context.Context, q AlertQuery) (*AlertPage, error) {
	v := url.Values{}
	if q.Path != "" {
		v.Set("path", contextPath(q.Path))
	}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.After != "" {
		v.Set("after", q.After)
	}
	var out AlertPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/alerts", v, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AckAlert acknowledges the alert at path (/alerts/<id>, a bare id, or a
// mirrored alert's path under /peers).
func (c *Client) AckAlert(ctx context.Context, path string) (*Alert, error) {
	var out Alert
	if err := c.do(ctx, http.MethodPost, alertPath(path)+"/ack", nil, struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SilenceAlert silences the alert at path until until (a time not after
// now lifts the silence).
func (c *Client) SilenceAlert(ctx context.Context, path string, until time.Time) (*Alert, error) {
	var out Alert
	if err := c.do(ctx, http.MethodPost, alertPath(path)+"/silence", nil, apitypes.AlertSilence{Until: until}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func alertPath(p string) string {
	return "/api/v1/alerts" + contextPath(strings.TrimSuffix(p, "/"))
}
