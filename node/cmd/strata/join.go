package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/node/config"
)

// federationStateDir is the folder, beside the config, where the node
// keeps per-consumer federation state (node certificates from joining).
const federationStateDir = "federation"

// reloadTimeout bounds asking a running node to apply an edited file.
const reloadTimeout = 15 * time.Second

func (a *app) joinCmd() *cobra.Command {
	var (
		cfgFlag string
		u       config.Upstream
	)
	c := &cobra.Command{
		Use:   "join --upstream HOST:PORT --token TOKEN [--publish PATH]... [--replica HOST:PORT]... [--config FILE]",
		Short: "Publish this node to a consumer above it (federation)",
		Long: `Join adds the consumer at --upstream to federation.upstreams in the node's
config file (replacing the entry of the same address), keeping the rest of
the file, comments included. TOKEN comes from "strata token create --kind
peer --peer <this node's name>" on the consumer. --publish (repeatable)
lists the subtrees published; none publishes the whole tree. A consumer
that is a cluster has one federation address per replica: give one as
--upstream and the others as --replica (repeatable); the link tries them
in turn until one accepts (the leader).

If the node runs (its API answers with the admin.token beside the config),
it applies the change at once (POST /api/v1/federation/reload); otherwise
the change takes effect at its next start. A different token for the same
address means joining again (after a revocation): the node certificate kept
for that consumer is dropped, and the new token is used.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			usage := func(err error) error { return usageError{err: err, cmd: c.CommandPath()} }
			if err := config.ValidUpstreamAddress(u.Address); err != nil {
				return usage(fmt.Errorf("--upstream: %w", err))
			}
			for _, r := range u.Replicas {
				if err := config.ValidUpstreamAddress(r); err != nil {
					return usage(fmt.Errorf("--replica: %w", err))
				}
			}
			if strings.TrimSpace(u.Token) == "" {
				return usage(errors.New("--token: required (strata token create --kind peer on the consumer)"))
			}
			path, _ := a.configPath(cfgFlag)
			var newToken bool
			afterWrite := func() error {
				if newToken {
					return dropFederationState(path, u.Address)
				}
				return nil
			}
			return a.editUpstreams(c, path, afterWrite, func(data []byte) ([]byte, string, error) {
				out, old, err := setUpstream(data, u)
				if err != nil {
					return nil, "", err
				}
				newToken = old == nil || old.Token != u.Token
				what := "added"
				if old != nil {
					what = "replaced"
				}
				pub := "the whole tree"
				if len(u.Publish) > 0 {
					pub = strings.Join(u.Publish, ", ")
				}
				return out, fmt.Sprintf("%s upstream %s in %s (publishing %s)", what, u.Address, path, pub), nil
			})
		},
	}
	addConfigFlag(c, &cfgFlag)
	f := c.Flags()
	f.StringVar(&u.Address, "upstream", "", "the consumer's federation address, HOST:PORT")
	f.StringVar(&u.Token, "token", "", "join token from the consumer (strata token create --kind peer)")
	f.StringArrayVar(&u.Publish, "publish", nil, "publish this subtree (repeatable; default the whole tree)")
	f.StringArrayVar(&u.Replicas, "replica", nil, "another replica's federation address of a consumer that is a cluster (repeatable)")
	c.MarkFlagRequired("upstream")
	c.MarkFlagRequired("token")
	return c
}

func (a *app) leaveCmd() *cobra.Command {
	var cfgFlag, addr string
	c := &cobra.Command{
		Use:   "leave --upstream HOST:PORT [--config FILE]",
		Short: "Stop publishing this node to a consumer (federation)",
		Long: `Leave removes the consumer at --upstream from federation.upstreams in the
node's config file, keeping the rest of the file. A running node drops the
link at once; otherwise the change takes effect at its next start. The
consumer keeps its mirror, frozen, until an administrator there revokes the
peer.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if addr == "" {
				return usageError{err: errors.New("--upstream: required"), cmd: c.CommandPath()}
			}
			path, _ := a.configPath(cfgFlag)
			return a.editUpstreams(c, path, nil, func(data []byte) ([]byte, string, error) {
				out, found, err := removeUpstream(data, addr)
				if err != nil {
					return nil, "", err
				}
				if !found {
					return nil, "", fmt.Errorf("%s has no upstream %s", path, addr)
				}
				return out, fmt.Sprintf("removed upstream %s from %s", addr, path), nil
			})
		},
	}
	addConfigFlag(c, &cfgFlag)
	c.Flags().StringVar(&addr, "upstream", "", "the consumer's federation address, HOST:PORT, as in the config")
	c.MarkFlagRequired("upstream")
	return c
}

// editUpstreams rewrites the config file at path with edit, after checking
// that the result is a valid configuration, runs afterWrite (if not nil),
// then asks the node to apply the file if it runs.
func (a *app) editUpstreams(c *cobra.Command, path string, afterWrite func() error, edit func([]byte) ([]byte, string, error)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	out, what, err := edit(data)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(out)
	if err == nil {
		cfg.Dir = filepath.Dir(path)
		if err = cfg.ApplyEnv(a.lookupEnv); err == nil {
			err = cfg.Validate()
		}
	}
	if err != nil {
		return fmt.Errorf("the edited %s would not be valid, left unchanged: %w", path, err)
	}
	if err := atomicfile.Write(path, out, st.Mode().Perm()); err != nil {
		return err
	}
	if afterWrite != nil {
		if err := afterWrite(); err != nil {
			return err
		}
	}
	fmt.Fprintln(a.stdout, what)
	return a.reloadRunning(c, path)
}

// reloadRunning asks the node of the config at path to apply its
// federation.upstreams, if it runs.
func (a *app) reloadRunning(c *cobra.Command, path string) error {
	x := &ctl{app: a, f: ctlFlags{config: path, output: "text", timeout: reloadTimeout}}
	err := x.call(c, func(ctx context.Context, cl *client.Client) error {
		_, err := cl.ReloadFederation(ctx)
		return err
	})
	var ue *url.Error
	switch {
	case err == nil:
		fmt.Fprintln(a.stdout, "the running node applied it")
		return nil
	case errors.As(err, &ue):
		fmt.Fprintf(a.stdout, "the node does not answer (%v): it takes effect at its next start\n", ue.Err)
		return nil
	}
	return fmt.Errorf("the file is changed, but the running node did not apply it: %w", err)
}

// setUpstream adds u to federation.upstreams of the YAML document data,
// or replaces the entry of the same address (returned as old). Everything
// else in the document is kept, comments included.
func setUpstream(data []byte, u config.Upstream) (out []byte, old *config.Upstream, err error) {
	doc, root, err := parseDoc(data)
	if err != nil {
		return nil, nil, err
	}
	fed := mapValue(root, "federation", true)
	if fed.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("federation (line %d) is not a mapping", fed.Line)
	}
	ups := mapValue(fed, "upstreams", true)
	if ups.Kind != yaml.SequenceNode {
		return nil, nil, fmt.Errorf("federation.upstreams (line %d) is not a list", ups.Line)
	}
	var entry yaml.Node
	if err := entry.Encode(u); err != nil {
		return nil, nil, err
	}
	i := findUpstream(ups, u.Address)
	if i < 0 {
		ups.Style = 0 // a flow [] becomes a block list
		ups.Content = append(ups.Content, &entry)
	} else {
		var prev config.Upstream
		if err := ups.Content[i].Decode(&prev); err != nil {
			return nil, nil, fmt.Errorf("federation.upstreams (line %d): %w", ups.Content[i].Line, err)
		}
		old = &prev
		entry.HeadComment = ups.Content[i].HeadComment
		ups.Content[i] = &entry
	}
	out, err = encodeDoc(doc)
	return out, old, err
}

// removeUpstream removes the entry of addr from federation.upstreams,
// and the keys left empty.
func removeUpstream(data []byte, addr string) (out []byte, found bool, err error) {
	doc, root, err := parseDoc(data)
	if err != nil {
		return nil, false, err
	}
	fed := mapValue(root, "federation", false)
	if fed == nil || fed.Kind != yaml.MappingNode {
		return nil, false, nil
	}
	ups := mapValue(fed, "upstreams", false)
	if ups == nil || ups.Kind != yaml.SequenceNode {
		return nil, false, nil
	}
	i := findUpstream(ups, addr)
	if i < 0 {
		return nil, false, nil
	}
	ups.Content = slices.Delete(ups.Content, i, i+1)
	if len(ups.Content) == 0 {
		deleteKey(fed, "upstreams")
	}
	if len(fed.Content) == 0 {
		deleteKey(root, "federation")
	}
	out, err = encodeDoc(doc)
	return out, true, err
}

// parseDoc parses a YAML document whose root is a mapping (an empty file
// is an empty mapping).
func parseDoc(data []byte) (doc, root *yaml.Node, err error) {
	doc = new(yaml.Node)
	if err := yaml.Unmarshal(data, doc); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	if doc.Kind == 0 {
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root = doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		*root = yaml.Node{Kind: yaml.MappingNode, HeadComment: root.HeadComment, FootComment: root.FootComment}
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, errors.New("config: the file is not a YAML mapping")
	}
	return doc, root, nil
}

func encodeDoc(doc *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return buf.Bytes(), nil
}

// mapValue returns the value of key in mapping m; with create, a missing
// or null value becomes an empty mapping ("upstreams": an empty list).
func mapValue(m *yaml.Node, key string, create bool) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		v := m.Content[i+1]
		if create && v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			*v = *emptyValue(key)
		}
		return v
	}
	if !create {
		return nil
	}
	v := emptyValue(key)
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
	return v
}

func emptyValue(key string) *yaml.Node {
	if key == "upstreams" {
		return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	}
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = slices.Delete(m.Content, i, i+2)
			return
		}
	}
}

// findUpstream returns the index of the entry of addr in the list, or -1.
func findUpstream(ups *yaml.Node, addr string) int {
	for i, e := range ups.Content {
		if e.Kind == yaml.MappingNode {
			if a := mapValue(e, "address", false); a != nil && a.Value == addr {
				return i
			}
		}
	}
	return -1
}

// dropFederationState removes the node certificate kept for the consumer
// at addr, so that the next connection joins with the new token.
func dropFederationState(configPath, addr string) error {
	dir := filepath.Join(filepath.Dir(configPath), federationStateDir, federation.StateDirName(addr))
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("drop the old node certificate for %s: %w", addr, err)
	}
	return nil
}
