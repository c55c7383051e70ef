package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/probes/mqtt"
)

// wireDevices builds the device registry, the jobs and, when an MQTT
// listener is configured, the broker, and connects them: jobs deliver
// through the broker, revocations disconnect, the broker authenticates
// through the registry and reports results to the jobs.
func (n *Node) wireDevices() error {
	cfg := &n.cfg
	caPEM, err := os.ReadFile(cfg.Path(cfg.MQTT.CACert))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mqtt.ca_cert: %w", err)
	}
	var ca *certs.Pair
	if caPEM != nil {
		if ca, err = certs.LoadPair(cfg.Path(cfg.MQTT.CACert), cfg.Path(cfg.MQTT.CAKey)); err != nil {
			n.log.Info("device certificates are not signed here: no CA key", "ca_key", cfg.MQTT.CAKey, "err", err)
			ca = nil
		}
	}
	if n.devices, err = devices.New(devices.Config{Tree: n.model, CA: ca, CAPEM: caPEM, Logger: n.log}); err != nil {
		return err
	}
	n.reg.MustRegister(n.devices.Collector())
	jc := jobs.Config{Records: n.model, Logger: n.log, Deliver: n.deliver, Finished: n.jobFinished}
	if n.cluster != nil {
		jc.Leading = n.cluster.IsLeader // only the leader expires jobs
	}
	if n.jobs, err = jobs.New(jc); err != nil {
		return err
	}
	n.calls = &calls.Service{Tree: n.model, Devices: n.devices, Jobs: n.jobs}
	n.devices.OnRevoke(func(id string) {
		if n.broker != nil {
			n.broker.Disconnect(id)
		}
	})
	if cfg.MQTT.Addr == "" && cfg.MQTT.TCPAddr == "" && cfg.MQTT.WSAddr == "" {
		return nil
	}
	var tlsConf *tls.Config
	if cfg.MQTT.Addr != "" {
		certFile, keyFile := cfg.MQTT.TLSCert, cfg.MQTT.TLSKey
		if certFile == "" {
			certFile, keyFile = cfg.API.TLSCert, cfg.API.TLSKey
		}
		if tlsConf, err = certs.ServerConfig(cfg.Path(certFile), cfg.Path(keyFile)); err != nil {
			return fmt.Errorf("mqtt tls: %w", err)
		}
		if caPEM != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(caPEM) {
				return fmt.Errorf("mqtt.ca_cert %s: no certificate", cfg.MQTT.CACert)
			}
			tlsConf.ClientCAs = pool
		}
	}
	n.broker, err = mqtt.New(mqtt.Config{
		TLSAddr: cfg.MQTT.Addr, TCPAddr: cfg.MQTT.TCPAddr, WSAddr: cfg.MQTT.WSAddr, TLS: tlsConf,
		Devices: deviceAuth{n.devices}, Tree: n.model, Commands: jobCommands{n.jobs},
		Logger: n.log, Registerer: n.reg,
		MaxPayloadBytes: cfg.MQTT.MaxPayloadBytes, MaxSessions: int64(cfg.MQTT.MaxSessions),
		IngestSlots: cfg.MQTT.IngestSlots, Slots: n.work, IngestPollerOff: cfg.MQTT.IngestPoller == "off",
		MaxConnecting: cfg.MQTT.MaxConnecting, MaxConnectingPerSource: cfg.MQTT.MaxConnectingPerSource,
		MaxParkedPerSource: cfg.MQTT.MaxParkedPerSource,
	})
	return err
}

// deliver hands a new job to the broker.
func (n *Node) deliver(j jobs.Job) {
	if n.broker != nil {
		n.broker.Deliver(j.Device, command(j))
	}
}

// mqttAddress is what enrolling devices are told to connect to.
func (n *Node) mqttAddress(reqHost string) string {
	if n.cfg.MQTT.Advertise != "" {
		return n.cfg.MQTT.Advertise
	}
	addr := n.MQTTAddr("tls")
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); (ip == nil || ip.IsUnspecified()) && reqHost != "" {
		host = reqHost
	}
	return net.JoinHostPort(host, port)
}

func command(j jobs.Job) mqtt.Command {
	return mqtt.Command{Job: j.ID, Function: j.Function, Args: j.Args, Deadline: j.Deadline, Tenant: j.Tenant}
}

// deviceAuth adapts the registry to the broker.
type deviceAuth struct{ d *devices.Service }

func (a deviceAuth) Authenticate(id, secret, addr string) (string, error) {
	dev, err := a.d.Authenticate(id, secret, addr)
	return dev.Tenant, err
}

func (a deviceAuth) AuthenticateCert(id, serial, addr string) (string, error) {
	dev, err := a.d.AuthenticateSerial(id, serial, addr)
	return dev.Tenant, err
}

// jobCommands adapts the jobs to the broker.
type jobCommands struct{ j *jobs.Service }

func (c jobCommands) Pending(device string) []mqtt.Command {
	js := c.j.Pending(device)
	out := make([]mqtt.Command, len(js))
	for i, j := range js {
		out[i] = command(j)
	}
	return out
}

func (c jobCommands) Delivered(ctx context.Context, device, job string) error {
	return c.j.MarkDelivered(ctx, device, job)
}

func (c jobCommands) Report(ctx context.Context, device, job string, r mqtt.Result) error {
	return c.j.Report(ctx, device, job, jobs.State(r.Status), r.Result, r.Error)
}

// jobFinished completes the audit record of the call that created j. A
// device job of a bulk job was made by no call of its own: the bulk job
// is audited where it was issued and where it was received, and its
// devices' outcomes are its part's (node/bulk).
func (n *Node) jobFinished(j jobs.Job) {
	if j.Bulk != "" {
		if b := n.bulkService(); b != nil {
			b.JobFinished(j)
		}
		return
	}
	n.audit.JobFinished(toAuditJob(j))
}

// finishedJob looks a job up for audit.Log.Reconcile.
func (n *Node) finishedJob(id string) (audit.Job, bool) {
	j, err := n.jobs.Get(id)
	if err != nil {
		return audit.Job{}, false
	}
	return toAuditJob(j), true
}

func toAuditJob(j jobs.Job) audit.Job {
	return audit.Job{
		ID: j.ID, Created: j.Created, State: string(j.State), Error: j.Error,
		Path: j.Path, Function: j.Function, CreatedBy: j.CreatedBy,
	}
}
