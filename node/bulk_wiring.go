package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/bulk"
)

// Interface guards.
var (
	_ federation.BulkReceiver = (*fedLocal)(nil)
	_ bulk.Links              = bulkLinks{}
)

// wireBulk builds the bulk jobs service once devices, jobs and the
// federation are wired: it sends bulk jobs down the provider links and
// takes them from consumers (fedLocal.Bulk).
func (n *Node) wireBulk() error {
	search := searchOf(n.store)
	if search == nil {
		n.log.Info("bulk jobs are off: the store has no search")
		return nil
	}
	bc := bulk.Config{
		Tree: n.model, Search: search.Search, Calls: n.calls, Jobs: n.jobs,
		Logger: n.log, Registerer: n.reg,
	}
	if n.fed != nil {
		bc.Links = bulkLinks{n.fed, n}
	}
	if n.cluster != nil {
		bc.Leading = n.cluster.IsLeader // parts are worked on by the leader
	}
	var err error
	n.bulk, err = bulk.New(bc)
	n.bulkRef.Store(n.bulk)
	return err
}

// bulkLinks are the federation's provider links as package bulk uses them.
type bulkLinks struct {
	fed *federation.Service
	n   *Node
}

func (l bulkLinks) Providers() []bulk.Provider {
	var out []bulk.Provider
	for _, p := range l.fed.Peers() {
		if p.Direction == "provider" && p.Name != "" && p.Mount != "" && p.State != "revoked" {
			out = append(out, bulk.Provider{Name: p.Name, Mount: p.Mount})
		}
	}
	return out
}

func (l bulkLinks) Send(ctx context.Context, provider string, id bulk.Identity, req bulk.Request) error {
	if err := l.n.sentInstall(ctx, provider, req); err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	err = l.fed.Bulk(ctx, provider, federation.Identity{User: id.User, Tenant: id.Tenant, System: id.System}, body)
	if errors.Is(err, federation.ErrUnreachable) {
		return fmt.Errorf("%w: %v", bulk.ErrUnreachable, err)
	}
	return err
}

// auditBulk is the audit operation of a bulk job request over a link.
const auditBulk = "bulk"

// Bulk takes a bulk job request from consumer (create or cancel this
// node's part), for the operator it carries, within what this node
// publishes to that consumer.
func (l *fedLocal) Bulk(ctx context.Context, consumer string, id federation.Identity, subtrees []model.Path, body []byte) error {
	var req bulk.Request
	err := json.Unmarshal(body, &req)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: bulk request: %v", model.ErrInvalid, err)
	case l.n.bulk == nil:
		err = fmt.Errorf("%w: this node runs no bulk jobs", model.ErrNotFound)
	default:
		err = l.receiveBulkInstall(ctx, consumer, id, req)
		if err != nil {
			break
		}
		err = l.n.bulk.Receive(ctx, consumer, bulk.Identity{User: id.User, Tenant: id.Tenant, System: id.System}, subtrees, req)
	}
	rec := fedRecord(consumer, id, auditBulk, "", req.Spec.Function, err, audit.OK)
	rec.Target = req.Spec.ID
	l.n.audit.Write(rec)
	return err
}

// bulkService is the bulk jobs service, nil until it is made (or when
// the store has no search).
func (n *Node) bulkService() *bulk.Service { return n.bulkRef.Load() }
