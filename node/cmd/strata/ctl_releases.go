package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node/client"
)

// Software releases: strata ctl releases keygen|list|show|delete and
// strata ctl artifacts upload (docs/cli.md, docs/software.md).

// envSigningKey names the default signing key file.
const envSigningKey = "STRATA_SIGNING_KEY"

// uploadAttempts bounds how often an upload resumes after an error.
const uploadAttempts = 5

func (x *ctl) releasesCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "releases",
		Short: "Software releases: signing keys, list, show, delete, stage, caches",
	})
	c.AddCommand(x.releasesKeygenCmd(), x.releasesListCmd(), x.releasesShowCmd(), x.releasesDeleteCmd(),
		x.releasesStageCmd(), x.releasesCacheCmd())
	return c
}

func (x *ctl) artifactsCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "artifacts",
		Short: "Upload the artifacts of software releases",
	})
	c.AddCommand(x.artifactsUploadCmd())
	return c
}

func (x *ctl) releasesKeygenCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Write a new Ed25519 release signing key pair",
		Long: `Keygen writes a new Ed25519 key pair: FILE holds the private key (base64,
mode 0600; keep it with the operator, never on a node) and FILE.pub the
public key (base64), which nodes list in software.trusted_keys. It prints
the key's id. It talks to no node and refuses to overwrite FILE.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists; not overwriting a key", out)
			}
			pub, key, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			if err := atomicfile.Write(out, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
				return err
			}
			if err := atomicfile.Write(out+".pub", []byte(base64.StdEncoding.EncodeToString(pub)+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(x.stdout, "key %s: private %s, public %s\n", apitypes.KeyID(pub), out, out+".pub")
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "file of the private key (the public key goes to FILE.pub)")
	c.MarkFlagRequired("out")
	return c
}

// readSigningKey reads a private key as keygen writes it.
func readSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key %s: want the base64 of a %d-byte Ed25519 private key (strata ctl releases keygen)", path, ed25519.PrivateKeySize)
	}
	return ed25519.PrivateKey(b), nil
}

func (x *ctl) releasesListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the releases you may see",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				rs, err := cl.Releases(ctx)
				if err != nil {
					return err
				}
				return x.show(rs, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tVERSION\tTENANT\tARTIFACTS\tSTORED\tEXPIRES")
					for _, r := range rs {
						stored := 0
						for _, a := range r.Artifacts {
							if a.Stored {
								stored++
							}
						}
						exp := fmtTime(r.Expires)
						if r.Expired {
							exp += " (expired)"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", r.Name, r.Version, orDash(r.Tenant), len(r.Artifacts), stored, exp)
					}
					tw.Flush()
				})
			})
		},
	}
}

func (x *ctl) releasesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME VERSION",
		Short: "Show a release and its artifacts",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				r, err := cl.Release(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return x.show(r, func(w io.Writer) { printRelease(w, r) })
			})
		},
	}
}

func printRelease(w io.Writer, r *client.Release) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "release:\t%s %s\n", r.Name, r.Version)
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(r.Tenant))
	fmt.Fprintf(tw, "signed by key:\t%s\n", r.KeyID)
	fmt.Fprintf(tw, "created:\t%s\n", fmtTime(r.Created))
	fmt.Fprintf(tw, "expires:\t%s\n", fmtTime(r.Expires))
	fmt.Fprintf(tw, "updated:\t%s by %s\n", fmtTime(r.Updated), r.By)
	tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OS\tARCH\tTYPE\tSIZE\tSHA256\tSTATE")
	for _, a := range r.Artifacts {
		state := "stored"
		if !a.Stored {
			state = fmt.Sprintf("uploaded %d/%d", a.Uploaded, a.Size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", a.OS, a.Arch, a.Type, a.Size, a.SHA256, state)
	}
	tw.Flush()
}

func (x *ctl) releasesDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME VERSION",
		Short: "Delete a release and the artifacts no other release names",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteRelease(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(x.stderr, "deleted release %s %s\n", args[0], args[1])
				return nil
			})
		},
	}
}

func (x *ctl) releasesStageCmd() *cobra.Command {
	var peers []string
	c := &cobra.Command{
		Use:   "stage NAME VERSION --peer PATH...",
		Short: "Send a release to nodes below, which fetch its artifacts now",
		Long: `Stage sends release NAME VERSION to each node named by --peer (its path
here: /peers/<name>, /peers/<a>/peers/<b>, ...). Each node keeps it, fetches
its artifacts from the node above it once, and keeps them whatever its
cache budget, so that a rollout later finds them there. The fetches go on
in the background: "strata ctl releases cache" shows them arrive.`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if len(peers) == 0 {
				return usageError{err: errors.New("give the nodes to stage to: --peer /peers/<name>..."), cmd: c.CommandPath()}
			}
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				res, err := cl.StageRelease(ctx, args[0], args[1], peers)
				if err != nil {
					return err
				}
				failed := 0
				for _, r := range res {
					if r.Error != "" {
						failed++
					}
				}
				err = x.show(res, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "PEER\tOUTCOME")
					for _, r := range res {
						out := "sent; fetching"
						if r.Error != "" {
							out = r.Error
						}
						fmt.Fprintf(tw, "%s\t%s\n", r.Peer, out)
					}
					tw.Flush()
				})
				if err == nil && failed > 0 {
					err = fmt.Errorf("%d of %d nodes were not reached", failed, len(res))
				}
				return err
			})
		},
	}
	c.Flags().StringArrayVar(&peers, "peer", nil, "a node below, by its path here (repeatable)")
	return c
}

func (x *ctl) releasesCacheCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cache",
		Short: "Show the artifact cache of this node and of every node below it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				tiers, err := cl.SoftwareCache(ctx)
				if err != nil {
					return err
				}
				return x.show(tiers, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "PATH\tNODE\tROLE\tCACHED\tBUDGET\tOBJECTS\tPINNED\tFETCHING\tFETCHED\tSERVED\tORIGIN")
					for _, t := range tiers {
						if t.Error != "" {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Path, t.Node, orDash(t.Role), t.Error)
							continue
						}
						budget := "-"
						if t.BudgetBytes > 0 {
							budget = humanize.IBytes(uint64(t.BudgetBytes))
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d (%s)\n", t.Path, t.Node, orDash(t.Role),
							humanize.IBytes(uint64(t.UsedBytes)), budget, t.Objects, t.Pinned, t.Fetching,
							humanize.IBytes(uint64(t.FetchedBytes)), humanize.IBytes(uint64(t.ServedBytes)),
							t.OriginObjects, humanize.IBytes(uint64(t.OriginBytes)))
					}
					tw.Flush()
				})
			})
		},
	}
}

// uploadFlags are the flags of artifacts upload.
type uploadFlags struct {
	release, version, os, arch, typ, key string
	expires                              time.Duration
	noProgress                           bool
}

func (x *ctl) artifactsUploadCmd() *cobra.Command {
	var f uploadFlags
	c := &cobra.Command{
		Use:   "upload FILE --release NAME --version V --os OS --arch ARCH --type TYPE [--key FILE]",
		Short: "Add FILE to a release (signing its manifest) and upload it, resumably",
		Long: `Upload adds FILE as the OS/ARCH artifact of TYPE (deb, rpm, tar, binary,
script) to release NAME version V: it hashes FILE, fetches the release's
manifest if it exists (a new one expires after --expires), adds the
artifact, signs the manifest with --key (default $` + envSigningKey + `), sends
it, then uploads FILE's bytes. An upload cut short resumes where the node's
copy ends, here after an error (up to ` + fmt.Sprint(uploadAttempts) + ` times) or by running the
same command again. The node verifies the SHA-256 before it stores the
artifact. The --timeout bounds each request except the upload itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.upload(c, args[0], f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.release, "release", "", "release name")
	fl.StringVar(&f.version, "version", "", "release version")
	fl.StringVar(&f.os, "os", "", "operating system of the artifact (linux, windows, ...)")
	fl.StringVar(&f.arch, "arch", "", "architecture of the artifact (amd64, arm64, ...)")
	fl.StringVar(&f.typ, "type", "", "package type: deb, rpm, tar, binary or script")
	fl.StringVar(&f.key, "key", "", "signing key file (default $"+envSigningKey+")")
	fl.DurationVar(&f.expires, "expires", 365*24*time.Hour, "lifetime of a new release's manifest")
	fl.BoolVar(&f.noProgress, "no-progress", false, "no progress bar")
	for _, n := range []string{"release", "version", "os", "arch", "type"} {
		c.MarkFlagRequired(n)
	}
	return c
}

// hashFile returns a file's SHA-256 (hex) and size.
func hashFile(path string) (string, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (x *ctl) upload(c *cobra.Command, file string, f uploadFlags) error {
	if f.key == "" {
		f.key, _ = x.lookupEnv(envSigningKey)
	}
	if f.key == "" {
		return usageError{err: errors.New("--key (or $" + envSigningKey + ") names the signing key"), cmd: c.CommandPath()}
	}
	key, err := readSigningKey(f.key)
	if err != nil {
		return err
	}
	sum, size, err := hashFile(file)
	if err != nil {
		return err
	}
	if size == 0 {
		return fmt.Errorf("%s is empty", file)
	}
	art := apitypes.Artifact{OS: f.os, Arch: f.arch, Type: f.typ, Size: size, SHA256: sum}
	err = x.call(c, func(ctx context.Context, cl *client.Client) error {
		m, err := x.manifestWith(ctx, cl, f, art)
		if err != nil || m == nil {
			return err
		}
		sm, err := m.Sign(key)
		if err != nil {
			return err
		}
		_, created, err := cl.PutRelease(ctx, f.release, f.version, sm)
		if err != nil {
			return err
		}
		verb := "extended"
		if created {
			verb = "created"
		}
		fmt.Fprintf(x.stderr, "%s release %s %s, signed by key %s\n", verb, f.release, f.version, sm.KeyID)
		return nil
	})
	if err != nil {
		return err
	}
	cl, err := x.client()
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	if err := x.sendFile(c.Context(), cl, file, f, sum, size); err != nil {
		return err
	}
	fmt.Fprintf(x.stdout, "%s %s %s/%s %s %s %d bytes\n", f.release, f.version, f.os, f.arch, f.typ, sum, size)
	return nil
}

// manifestWith returns the release's manifest with art added (a new
// manifest when the release does not exist), or nil when it holds art
// already.
func (x *ctl) manifestWith(ctx context.Context, cl *client.Client, f uploadFlags, art apitypes.Artifact) (*apitypes.Manifest, error) {
	rel, err := cl.Release(ctx, f.release, f.version)
	if client.IsCode(err, client.CodeNotFound) {
		now := time.Now().UTC()
		return &apitypes.Manifest{Name: f.release, Version: f.version, Artifacts: []apitypes.Artifact{art},
			Created: now.Format(time.RFC3339), Expires: now.Add(f.expires).Format(time.RFC3339)}, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := apitypes.ParseManifest(rel.Signed.Manifest)
	if err != nil {
		return nil, err
	}
	for _, a := range m.Artifacts {
		if a == art {
			return nil, nil
		}
		if a.OS == art.OS && a.Arch == art.Arch && a.Type == art.Type {
			return nil, fmt.Errorf("release %s %s has another %s/%s %s artifact (%s); publish a new version",
				f.release, f.version, a.OS, a.Arch, a.Type, a.SHA256)
		}
	}
	m.Artifacts = append(m.Artifacts, art)
	return m, nil
}

// sendFile uploads file from where the node's copy ends, resuming after
// errors.
func (x *ctl) sendFile(ctx context.Context, cl *client.Client, file string, f uploadFlags, sum string, size int64) error {
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	defer fh.Close()
	var bar *mpb.Bar
	var p *mpb.Progress
	if !f.noProgress && !x.json() && isTerminalWriter(x.stderr) {
		p = mpb.NewWithContext(ctx, mpb.WithOutput(x.stderr), mpb.WithWidth(40))
		bar = p.New(size, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name(f.os+"/"+f.arch+" "+f.typ, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(decor.WC{W: 5}), decor.AverageSpeed(decor.SizeB1024(0), " % .1f")))
		defer func() {
			bar.Abort(false)
			p.Wait()
		}()
	}
	var lastErr error
	for attempt := 0; attempt < uploadAttempts; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, x.f.timeout)
		off, complete, err := cl.UploadOffset(rctx, f.release, f.version, sum)
		cancel()
		if err != nil {
			return err
		}
		if bar != nil {
			bar.SetCurrent(off)
		}
		if complete {
			return nil
		}
		if attempt > 0 || off > 0 {
			fmt.Fprintf(x.stderr, "resuming at byte %d of %d\n", off, size)
		}
		if _, err := fh.Seek(off, io.SeekStart); err != nil {
			return err
		}
		var body io.Reader = fh
		if bar != nil {
			pr, _ := bar.ProxyReader(fh)
			body = pr
		}
		st, err := cl.UploadArtifact(ctx, f.release, f.version, sum, off, body, size-off)
		if err == nil && st.Complete {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("the node holds %d of %d bytes", st.Offset, size)
		}
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status/100 == 4 && ae.Code != client.CodeConflict {
			return err // refused: resuming would not help
		}
		if ctx.Err() != nil {
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("upload did not complete after %d attempts: %w", uploadAttempts, lastErr)
}
