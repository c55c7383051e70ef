package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-dm/strata/node/client"
)

func (x *ctl) devicesCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "devices",
		Short: "Enrolled devices: list, get, revoke",
		Long: `Devices lists and revokes enrolled devices. Devices enroll with tokens
from "strata token create --kind enroll"; a device's data is its context,
/devices/<id> ("strata ctl get /devices/<id>").`,
	})
	list := x.devicesListCmd()
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.GetDevice(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) { printDevice(w, d) })
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device's credentials and disconnect it",
		Long: `Revoke stops the device's secret and certificate from working and closes
its MQTT sessions at once. The device cannot enroll again until an operator
allows it with "strata ctl devices allow-enroll ID".`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.RevokeDevice(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) {
					fmt.Fprintf(w, "revoked device %s\n", d.ID)
					printDevice(w, d)
				})
			})
		},
	}
	allow := &cobra.Command{
		Use:   "allow-enroll ID",
		Short: "Let a revoked device enroll again",
		Long: `Allow-enroll lets a revoked device enroll again with a valid enrollment
token. It stays revoked, without working credentials, until it does;
revoking it again withdraws the permission. Shared devices (no tenant) are
allowed by system administrators only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				d, err := cl.AllowDeviceEnroll(ctx, args[0])
				if err != nil {
					return err
				}
				return x.show(d, func(w io.Writer) {
					fmt.Fprintf(w, "device %s may enroll again\n", d.ID)
					printDevice(w, d)
				})
			})
		},
	}
	c.AddCommand(list, get, revoke, allow)
	return c
}

func printDevice(w io.Writer, d *client.Device) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", d.ID)
	fmt.Fprintf(tw, "path:\t%s\n", d.Path)
	fmt.Fprintf(tw, "tenant:\t%s\n", orDash(d.Tenant))
	fmt.Fprintf(tw, "group:\t%s\n", d.Group)
	fmt.Fprintf(tw, "hardware id:\t%s\n", d.HardwareID)
	fmt.Fprintf(tw, "enrolled:\t%s\n", fmtTime(d.Enrolled))
	fmt.Fprintf(tw, "enroll token:\t%s\n", orDash(d.EnrollToken))
	fmt.Fprintf(tw, "certificate:\t%s\n", orDash(d.CertSerial))
	fmt.Fprintf(tw, "revoked:\t%t\n", d.Revoked)
	if d.Revoked {
		fmt.Fprintf(tw, "revoked at:\t%s\n", fmtTime(d.RevokedAt))
		fmt.Fprintf(tw, "may enroll again:\t%t\n", d.EnrollAllowed)
	}
	tw.Flush()
}

// deviceRow is one device as "devices list" shows it: its registry entry
// (devices enrolled here) joined with its context's state (any device the
// caller sees, mounted ones included).
type deviceRow struct {
	client.Device
	Online   *bool     `json:"online,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	OS       string    `json:"os,omitempty"`
}

// maxListedDevices bounds what devices list reads (search pages of 1000).
const maxListedDevices = 100_000

func (x *ctl) devicesListCmd() *cobra.Command {
	var (
		path, os, tenant string
		online, offline  bool
		labels           []string
		limit            int
	)
	c := &cobra.Command{
		Use:   "list [--path P] [--online|--offline] [--os OS] [--label k=v]... [--tenant T] [--limit N]",
		Short: "List devices with their state: online, last seen, OS, path",
		Long: `List shows the devices below --path (default /: this node's devices and
every node's below it), with whether each is online, when it was last
seen and its OS, joined with this node's registry for the devices enrolled
here (group, hardware id, revoked). Filters: --online or --offline, --os,
--label k=v (repeatable), --tenant (system users). Devices are read a page
of 1000 at a time, up to --limit (default 100000).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			usage := func(err error) error { return usageError{err: err, cmd: c.CommandPath()} }
			if online && offline {
				return usage(errors.New("--online and --offline exclude each other"))
			}
			lab, err := parseKV("label", labels)
			if err != nil {
				return usage(err)
			}
			if limit <= 0 || limit > maxListedDevices {
				return usage(fmt.Errorf("--limit: 1 to %d", maxListedDevices))
			}
			q := client.SearchQuery{Path: path, Type: "device", Labels: lab, Tenant: tenant, Vars: map[string]any{}, Limit: 1000}
			if online || offline {
				q.Vars["online"] = online
			}
			if os != "" {
				q.Vars["os"] = os
			}
			filtered := online || offline || os != "" || len(lab) > 0 || tenant != ""
			return x.call(c, func(ctx context.Context, cl *client.Client) error {
				rows, more, err := listDevices(ctx, cl, q, limit, filtered)
				if err != nil {
					return err
				}
				if more {
					fmt.Fprintf(x.stderr, "more than %d devices: raise --limit or narrow the filters\n", limit)
				}
				return x.show(map[string]any{"devices": rows}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tPATH\tTENANT\tONLINE\tLAST SEEN\tOS\tGROUP\tHARDWARE ID\tREVOKED")
					for _, d := range rows {
						on := "-"
						if d.Online != nil {
							on = strconv.FormatBool(*d.Online)
						}
						seen := "-"
						if !d.LastSeen.IsZero() {
							seen = fmtTime(d.LastSeen)
						}
						revoked := "-"
						if !d.Enrolled.IsZero() {
							revoked = strconv.FormatBool(d.Revoked)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Path, orDash(d.Tenant), on, seen, orDash(d.OS),
							orDash(d.Group), orDash(clip(d.HardwareID, 40)), revoked)
					}
					tw.Flush()
				})
			})
		},
	}
	f := c.Flags()
	f.StringVar(&path, "path", "/", "the subtree listed (mounted nodes' devices included)")
	f.BoolVar(&online, "online", false, "only the devices online")
	f.BoolVar(&offline, "offline", false, "only the devices offline")
	f.StringVar(&os, "os", "", "only the devices whose os variable is this")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	f.StringVar(&tenant, "tenant", "", "only this tenant's devices (system users)")
	f.IntVar(&limit, "limit", maxListedDevices, "at most this many devices")
	return c
}

// listDevices reads the devices q finds (up to limit; more reports that
// there were more) and joins the registry's entries. Without filters, a
// registered device the search does not show (its context gone) is listed
// too. A node without search lists its registry.
func listDevices(ctx context.Context, cl *client.Client, q client.SearchQuery, limit int, filtered bool) ([]deviceRow, bool, error) {
	reg, err := cl.ListDevices(ctx)
	if err != nil && apiCode(err) != http.StatusNotImplemented {
		return nil, false, err
	}
	byPath := map[string]client.Device{}
	for _, d := range reg {
		byPath[d.Path] = d
	}
	var rows []deviceRow
	seen := map[string]bool{}
	more := false
	for {
		page, err := cl.Search(ctx, q)
		if apiCode(err) == http.StatusNotImplemented {
			break
		}
		if err != nil {
			return nil, false, err
		}
		for _, c := range page.Contexts {
			if len(rows) == limit {
				more = true
				break
			}
			r := deviceRow{Device: byPath[c.Path]}
			r.Path, r.Tenant = c.Path, c.Tenant
			if r.ID == "" {
				r.ID = c.Path[strings.LastIndexByte(c.Path, '/')+1:]
			}
			if v, ok := c.Variables["online"]; ok {
				var b bool
				if json.Unmarshal(v.Value, &b) == nil {
					r.Online = &b
				}
			}
			if v, ok := c.Variables["last_seen"]; ok {
				var t time.Time
				if json.Unmarshal(v.Value, &t) == nil {
					r.LastSeen = t
				}
			}
			if v, ok := c.Variables["os"]; ok {
				json.Unmarshal(v.Value, &r.OS)
			}
			seen[c.Path] = true
			rows = append(rows, r)
		}
		if more || page.Next == "" {
			break
		}
		q.After = page.Next
	}
	if !filtered && !more {
		for _, d := range reg {
			if !seen[d.Path] && strings.HasPrefix(d.Path+"/", strings.TrimSuffix(q.Path, "/")+"/") {
				rows = append(rows, deviceRow{Device: d})
			}
		}
	}
	return rows, more, nil
}

// apiCode is the HTTP status of an API error (0 for others).
func apiCode(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}
