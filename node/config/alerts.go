package config

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Alerts configures alert evaluation and notifications (docs/alerts.md).
type Alerts struct {
	// EvalInterval is how often durations are checked (pending alerts
	// fire, event alerts resolve) and notification groups flushed
	// (default 1s).
	EvalInterval Duration `yaml:"eval_interval"`
	// Queue bounds the changes waiting for the evaluator (default 65536);
	// past it changes are dropped and every rule rescanned.
	Queue int `yaml:"queue"`
	// ResolvedRetention is how long a resolved alert is kept (default 24h).
	ResolvedRetention Duration        `yaml:"resolved_retention"`
	Receivers         []AlertReceiver `yaml:"receivers,omitempty"`
	Routes            []AlertRoute    `yaml:"routes,omitempty"`
}

// AlertReceiver is where notifications go; webhook is its only kind yet.
type AlertReceiver struct {
	Name    string        `yaml:"name"`
	Webhook *AlertWebhook `yaml:"webhook,omitempty"`
}

// AlertWebhook posts each notification as JSON to URL.
type AlertWebhook struct {
	URL string `yaml:"url"`
	// CAFile is the PEM of the CA the receiver's certificate chains to
	// (relative to the config's folder); empty: the system's roots.
	CAFile  string   `yaml:"ca_file,omitempty"`
	Timeout Duration `yaml:"timeout,omitempty"` // default 10s
}

// AlertRoute sends the alerts whose labels match to a receiver, grouped.
type AlertRoute struct {
	Receiver string            `yaml:"receiver"`
	Match    map[string]string `yaml:"match,omitempty"`
	GroupBy  []string          `yaml:"group_by,omitempty"`
	// GroupWait (default 30s), GroupInterval (default 5m) and
	// RepeatInterval (default 4h; 0s: never) as Alertmanager has them.
	GroupWait      *Duration `yaml:"group_wait,omitempty"`
	GroupInterval  *Duration `yaml:"group_interval,omitempty"`
	RepeatInterval *Duration `yaml:"repeat_interval,omitempty"`
}

// Defaults of a route's timing.
const (
	DefaultGroupWait      = 30 * time.Second
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
)

// Timing returns the route's group_wait, group_interval and
// repeat_interval with their defaults.
func (r AlertRoute) Timing() (wait, interval, repeat time.Duration) {
	wait, interval, repeat = DefaultGroupWait, DefaultGroupInterval, DefaultRepeatInterval
	if r.GroupWait != nil {
		wait = r.GroupWait.D()
	}
	if r.GroupInterval != nil {
		interval = r.GroupInterval.D()
	}
	if r.RepeatInterval != nil {
		repeat = r.RepeatInterval.D()
	}
	return
}

func (a *Alerts) validate() error {
	if a.EvalInterval < Duration(10*time.Millisecond) || a.EvalInterval > Duration(time.Minute) {
		return errors.New("alerts.eval_interval: must be from 10ms to 1m")
	}
	if a.Queue < 1 {
		return errors.New("alerts.queue: must be positive")
	}
	if a.ResolvedRetention <= 0 {
		return errors.New("alerts.resolved_retention: must be positive")
	}
	names := map[string]bool{}
	for i, r := range a.Receivers {
		if r.Name == "" || names[r.Name] {
			return fmt.Errorf("alerts.receivers[%d]: a name is required, unique among receivers", i)
		}
		names[r.Name] = true
		if r.Webhook == nil {
			return fmt.Errorf("alerts.receivers[%d] (%s): webhook is required", i, r.Name)
		}
		u, err := url.Parse(r.Webhook.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alerts.receivers[%d] (%s): webhook.url %q: want an http or https URL", i, r.Name, r.Webhook.URL)
		}
		if r.Webhook.Timeout < 0 {
			return fmt.Errorf("alerts.receivers[%d] (%s): webhook.timeout must not be negative", i, r.Name)
		}
	}
	for i, r := range a.Routes {
		if !names[r.Receiver] {
			return fmt.Errorf("alerts.routes[%d]: receiver %q is not in alerts.receivers", i, r.Receiver)
		}
		for _, d := range []*Duration{r.GroupWait, r.GroupInterval, r.RepeatInterval} {
			if d != nil && *d < 0 {
				return fmt.Errorf("alerts.routes[%d]: durations must not be negative", i)
			}
		}
	}
	return nil
}
