package federation

import (
	"fmt"

	"github.com/strata-dm/strata/model"
)

// A provider's word is trusted only inside its mount: every path it sends
// (log entries, snapshot contexts) is judged here, in one place, before
// anything is written to the mirror.

// Reasons a mirror rejects what a provider sent: the "reason" label of
// strata_federation_entries_rejected_total.
const (
	rejectPath      = "bad_path"      // not a canonical absolute path, or the provider's root
	rejectOp        = "bad_op"        // not a put, delete or event
	rejectPublished = "not_published" // outside what the provider announced it publishes
	rejectGrant     = "not_granted"   // outside what this node accepted of the provider
	rejectTooDeep   = "too_deep"      // too long or too deep once mounted here
)

// bounds are where one provider's data may land on this node: under its
// mount, inside both what it publishes (its hello) and what this node
// accepted of it (the subtrees recorded when it joined).
type bounds struct {
	mount   model.Path
	publish []model.Path // normalised; never empty ([/]: the whole tree)
	accept  []model.Path // normalised; empty: all it publishes
}

func newBounds(mount model.Path, publish, accept []model.Path) bounds {
	pub := model.NormalizeSubtrees(publish)
	if len(pub) == 0 {
		pub = []model.Path{model.Root}
	}
	return bounds{mount: mount, publish: pub, accept: model.NormalizeSubtrees(accept)}
}

// canonicalPath reports whether p is exactly the canonical spelling of a
// path: absolute, no trailing slash, every segment valid. A provider's
// paths are never repaired: "0/x" is not "/0/x".
func canonicalPath(p model.Path) bool {
	q, err := model.ParsePath(string(p))
	return err == nil && q == p && len(p) > 0 && p[0] == '/'
}

// place maps a provider path onto this node, or says why it may not be:
// the mapped path is always strictly below the mount.
func (b bounds) place(p model.Path) (model.Path, string) {
	if !canonicalPath(p) || p.IsRoot() {
		return "", rejectPath
	}
	if !within(p, b.publish) {
		return "", rejectPublished
	}
	if len(b.accept) > 0 && !within(p, b.accept) {
		return "", rejectGrant
	}
	mp := mapPath(b.mount, p)
	if !canonicalPath(mp) {
		return "", rejectTooDeep
	}
	if !mp.Within(b.mount) || mp == b.mount {
		return "", rejectPath // cannot happen for a canonical p; kept as the last word
	}
	return mp, ""
}

// rejection is one thing a provider sent that the mirror refused.
type rejection struct {
	reason string
	seq    uint64 // 0 for a snapshot context
	path   model.Path
}

func (r rejection) String() string {
	if r.seq > 0 {
		return fmt.Sprintf("refused entry %d at %q: %s", r.seq, r.path, r.reason)
	}
	return fmt.Sprintf("refused snapshot context %q: %s", r.path, r.reason)
}
