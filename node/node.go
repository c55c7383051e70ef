// Package node assembles one Strata server from its parts: store, model,
// auth, devices, jobs, the MQTT endpoint and the API. It is the only
// package that knows all of them.
//
// Lifecycle: New opens the store and wires everything (or releases what it
// opened and fails); Start opens the listeners; Shutdown stops in reverse
// order. Both Start and Shutdown are safe to call once each; Shutdown twice
// is safe.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/slots"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/alerts"
	"github.com/strata-dm/strata/node/api"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/bulk"
	"github.com/strata-dm/strata/node/calls"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/cluster"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/node/console"
	"github.com/strata-dm/strata/node/devices"
	"github.com/strata-dm/strata/node/history"
	"github.com/strata-dm/strata/node/jobs"
	"github.com/strata-dm/strata/node/objects"
	"github.com/strata-dm/strata/node/releases"
	"github.com/strata-dm/strata/probes/mqtt"
)

// AdminTokenFile is the file beside strata.yaml holding the first admin's
// bearer token; strata init writes it and the node's first start creates
// the admin user from it.
const AdminTokenFile = "admin.token"

// Options are what New needs.
type Options struct {
	Config  config.Config
	Logger  *slog.Logger
	Version string
	// ConfigFile is the file Config was loaded from; the node re-reads
	// its federation.upstreams on POST /api/v1/federation/reload.
	ConfigFile string
}

// Node is one running Strata server.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	store   nodeStore
	model   *model.Model
	auth    *auth.Service
	devices *devices.Service
	calls   *calls.Service // device function calls, for the API's and federation's callers alike
	jobs    *jobs.Service
	bulk    *bulk.Service   // nil when the store has no search
	alerts  *alerts.Service // nil when the store has no search
	// bulkRef is bulk for the jobs service's callbacks, which may run
	// before bulk is made.
	bulkRef atomic.Pointer[bulk.Service]
	audit   *audit.Log
	// objects holds artifacts' bytes, releases their signed manifests.
	objects  objects.Store
	releases *releases.Service
	history  *history.Service // nil when history.enabled is false
	broker   *mqtt.Broker     // nil without an MQTT listener
	// work bounds the node's device work, MQTT ingest and federation
	// sync application together (mqtt.ingest_slots; nil: unbounded).
	work    *slots.Limiter
	api     *api.Server
	fed     *federation.Service // nil when federation is off
	cluster *cluster.Cluster    // nil unless the node is a replica of a cluster
	follow  *followQueue        // applied records to follow (cluster only)
	reg     *prometheus.Registry

	configFile string
	tlsConf    *tls.Config

	http     *http.Server
	listener net.Listener
	ready    chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// New opens the store and wires the node; it listens only in Start.
func New(opts Options) (_ *Node, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.Name)
	n := &Node{cfg: cfg, log: log, ready: make(chan struct{}), stop: make(chan struct{}), configFile: opts.ConfigFile,
		work: deviceWork(cfg.MQTT)}
	defer func() {
		if err != nil {
			n.close()
		}
	}()

	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mcfg := model.Config{Logger: log}
	if cfg.Cluster.Enabled() {
		if err := n.openCluster(&cfg); err != nil {
			return nil, err
		}
		n.store, mcfg.Forward = clusterStore(n.cluster), n.cluster
	} else if n.store, err = openStore(&cfg, log); err != nil {
		return nil, err
	}
	mcfg.Store = n.store
	if n.model, err = model.New(mcfg); err != nil {
		return nil, err
	}
	// Before the replica can lead: the leader decides the job and bulk
	// job changes that followers forward (jobs.New and bulk.New register
	// them again).
	n.model.RegisterUpdater(jobs.KindJob, jobs.Update)
	n.model.RegisterUpdater(bulk.KindBulk, bulk.Update)
	n.model.RegisterUpdater(releases.Kind, releases.Update)
	if n.auth, err = auth.New(auth.Config{
		Records:       n.model,
		Logger:        log,
		LoginFailures: cfg.Auth.LoginFailures,
		LoginWindow:   cfg.Auth.LoginWindow.D(),
		SessionTTL:    cfg.Auth.SessionTTL.D(),
	}); err != nil {
		return nil, err
	}
	// A replica creates the first admin only when it bootstrapped the
	// cluster (and leads it); the others have it through the log.
	bootstrapAdmin := n.cluster == nil
	if n.cluster != nil {
		if bootstrapAdmin, err = n.startCluster(); err != nil {
			return nil, err
		}
	}
	if bootstrapAdmin {
		if err := n.bootstrap(); err != nil {
			return nil, err
		}
	}

	n.registerModelMetrics()
	if rs, ok := n.store.(replicaReporter); ok {
		n.reg.MustRegister(replicaCollector{rs})
	}
	if n.audit, err = audit.New(audit.Config{Records: n.model, Logger: log, Registerer: n.reg}); err != nil {
		return nil, err
	}
	if err := n.wireDevices(); err != nil {
		return nil, err
	}
	if err := n.wireFederation(); err != nil {
		return nil, err
	}
	if err := n.wireBulk(); err != nil {
		return nil, err
	}
	if err := n.wireReleases(); err != nil {
		return nil, err
	}
	if err := n.wireAlerts(); err != nil {
		return nil, err
	}
	if err := n.wireHistory(); err != nil {
		return nil, err
	}

	if n.api, err = api.New(api.Config{
		Model:        n.model,
		Auth:         n.auth,
		Logger:       log,
		MaxBodyBytes: cfg.API.MaxBodyBytes,

		BodyTimeout:               cfg.API.BodyTimeout.D(),
		ReadHeaderTimeout:         cfg.API.ReadHeaderTimeout.D(),
		IdleTimeout:               cfg.API.IdleTimeout.D(),
		MaxConns:                  cfg.API.MaxConns,
		MaxConnsPerAddr:           cfg.API.MaxConnsPerAddress,
		MaxUnauthenticated:        cfg.API.MaxUnauthenticated,
		MaxUnauthenticatedPerAddr: cfg.API.MaxUnauthenticatedPerAddress,
		MaxStreams:                cfg.API.MaxStreams,
		MaxStreamsPerUser:         cfg.API.MaxStreamsPerUser,
		Gatherer:                  n.reg,
		Registerer:                n.reg,
		Ready:                     n.readyErr,
		Version:                   opts.Version,
		Devices:                   n.devices,
		Jobs:                      n.jobs,
		Bulk:                      n.bulk,
		Alerts:                    n.alerts,
		Releases:                  n.releases,
		Software:                  n,
		MQTTAddress:               n.mqttAddress,
		Search:                    searchOf(n.store),
		Feed:                      feedOf(n.store),
		History:                   n.historyAPI(),

		Federation:       n.fedAPI(),
		Cluster:          n.clusterAPI(),
		ReloadFederation: n.reloadFederation,
		Audit:            n.audit,
		Backups:          n,
		Console:          console.New(),
	}); err != nil {
		return nil, err
	}
	if n.tlsConf, err = certs.ServerConfig(cfg.Path(cfg.API.TLSCert), cfg.Path(cfg.API.TLSKey)); err != nil {
		return nil, fmt.Errorf("api tls: %w", err)
	}
	return n, nil
}

// bootstrap creates the first admin from admin.token when the node has no
// users yet.
func (n *Node) bootstrap() error {
	path := filepath.Join(n.cfg.Dir, AdminTokenFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	created, err := n.auth.Bootstrap(context.Background(), strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("bootstrap admin from %s: %w", path, err)
	}
	if created {
		n.log.Info("created the first admin user from the admin token", "user", "admin", "file", path)
	}
	return nil
}

func (n *Node) registerModelMetrics() {
	// The node's name and role as labels, so that dashboards can group
	// any metric by node or tier (a join on the scrape's instance).
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "strata_node_info",
		Help:        "The node's name and role, as labels; always 1.",
		ConstLabels: prometheus.Labels{"node": n.cfg.Name, "role": n.cfg.Role},
	})
	info.Set(1)
	n.reg.MustRegister(info)
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strata_model_last_seq",
		Help: "Sequence number of the last durable change-log entry.",
	}, func() float64 { return float64(n.model.LastSeq()) }))
	commits := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_model_commits_total", Help: "Durable batches committed."})
	entries := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_model_entries_total", Help: "Change-log entries committed."})
	n.reg.MustRegister(commits, entries)
	n.model.OnCommit(func(es []model.Entry) {
		commits.Inc()
		entries.Add(float64(len(es)))
	})
}

// Start opens the API listener and the maintenance loop. It returns once
// the node serves; ctx bounds only the start itself.
func (n *Node) Start(ctx context.Context) error {
	if n.broker != nil {
		if err := n.broker.Start(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", n.cfg.API.Addr)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", n.cfg.API.Addr, err)
	}
	n.listener = ln
	// The API's limits: header, body and idle deadlines, connections per
	// client address and overall.
	n.http = n.api.HTTPServer(n.tlsConf, slog.NewLogLogger(n.log.Handler(), slog.LevelDebug))
	if n.history != nil {
		n.history.Start()
	}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.http.ServeTLS(n.api.LimitListener(ln), "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		n.maintain()
	}()
	if n.follow != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.followReplica()
		}()
	}
	if n.fed != nil {
		if err := n.fed.Start(ctx); err != nil {
			return err
		}
		if n.cluster != nil {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.leadFederation()
			}()
		}
	}
	if n.alerts != nil {
		n.alerts.Start()
	}
	close(n.ready)
	n.log.Info("node started", "role", n.cfg.Role, "api", "https://"+ln.Addr().String(), "last_seq", n.model.LastSeq())
	return nil
}

func (n *Node) readyErr() error {
	select {
	case <-n.stop:
		return errors.New("shutting down")
	case <-n.ready:
		if n.cluster != nil {
			return n.cluster.Ready()
		}
		return nil
	default:
		return errors.New("starting")
	}
}

// maintain enforces retention: event history by count and age, change-log
// length, expired tokens, finished jobs, old audit records. On a cluster
// it runs on the leader only: event pruning and log compaction are
// replicated operations (the leader's cutoff and compaction point, applied
// by every replica alike; compaction's floor is the consumers' replicated
// cursors), and the records' retention deletes through the model.
func (n *Node) maintain() {
	// Calls whose job ended just before the node stopped may still read
	// pending in the audit trail: complete them once, at start.
	if k, err := n.audit.Reconcile(context.Background(), n.finishedJob); err != nil {
		n.log.Warn("audit: completing pending calls", "err", err)
	} else if k > 0 {
		n.log.Info("audit: completed calls whose job had ended", "count", k)
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.retain(time.Now())
	}
}

// retain runs one retention pass as of now; on a replica that does not
// lead, none (see maintain).
func (n *Node) retain(now time.Time) {
	if n.cluster != nil && !n.cluster.IsLeader() {
		return
	}
	r := n.cfg.Retention
	if k, err := n.store.PruneEvents(r.EventsPerContext, now.Add(-r.EventMaxAge.D())); err != nil {
		n.log.Warn("event retention", "err", err)
	} else if k > 0 {
		n.log.Debug("pruned events", "count", k)
	}
	if k, err := n.store.CompactLog(n.compactKeep()); err != nil {
		n.log.Warn("log compaction", "err", err)
	} else if k > 0 {
		n.log.Debug("compacted change log", "entries", k)
	}
	if _, err := n.auth.Prune(context.Background(), 7*24*time.Hour); err != nil {
		n.log.Warn("token pruning", "err", err)
	}
	if k, err := n.jobs.Prune(context.Background(), now.Add(-r.JobMaxAge.D())); err != nil {
		n.log.Warn("job retention", "err", err)
	} else if k > 0 {
		n.log.Debug("pruned finished jobs", "count", k)
	}
	if k, err := n.audit.Prune(context.Background(), now.Add(-r.EventMaxAge.D())); err != nil {
		n.log.Warn("audit retention", "err", err)
	} else if k > 0 {
		n.log.Debug("pruned audit records", "count", k)
	}
}

// Shutdown stops serving (draining requests until ctx ends) and closes the
// store. Calling it more than once is safe.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		close(n.stop)
		if n.http != nil {
			n.api.Shutdown()
			if err := n.http.Shutdown(ctx); err != nil {
				n.http.Close()
			}
		}
		n.wg.Wait()
		var errs []error
		if n.broker != nil {
			errs = append(errs, n.broker.Shutdown(ctx))
		}
		if n.cluster != nil {
			// A leader hands leadership over before it goes.
			errs = append(errs, n.cluster.Shutdown(ctx))
		}
		errs = append(errs, n.close())
		n.shutdownErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.shutdownErr
}

// close releases what New opened, in reverse order.
func (n *Node) close() error {
	var errs []error
	if n.history != nil {
		n.history.Close() // its last flush goes through the model
	}
	if n.alerts != nil {
		n.alerts.Close()
	}
	if n.bulk != nil {
		n.bulk.Close()
	}
	if n.releases != nil {
		n.releases.Close()
	}
	if n.fed != nil {
		errs = append(errs, n.fed.Close())
	}
	if n.jobs != nil {
		n.jobs.Close()
	}
	if n.objects != nil {
		errs = append(errs, n.objects.Close())
	}
	if n.model != nil {
		errs = append(errs, n.model.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close())
	}
	return errors.Join(errs...)
}

// APIAddr is the address the API listens on once started.
func (n *Node) APIAddr() string {
	if n.listener == nil {
		return ""
	}
	return n.listener.Addr().String()
}

// MQTTAddr is the bound address of MQTT listener kind ("tls", "tcp",
// "ws") once started, or "".
func (n *Node) MQTTAddr(kind string) string {
	if n.broker == nil {
		return ""
	}
	return n.broker.Addr(kind)
}

// Federation exposes the federation service (nil when off), for
// in-process harnesses.
func (n *Node) Federation() *federation.Service { return n.fed }

// FederationAddr is the bound UDP address of the federation socket once
// started, or "".
func (n *Node) FederationAddr() string {
	if n.fed == nil {
		return ""
	}
	return n.fed.Addr()
}

// Model exposes the tree, for in-process harnesses.
func (n *Node) Model() *model.Model { return n.model }
