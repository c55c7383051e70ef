package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/strata-dm/strata/apitypes"
)

// Inventory describes the device; it is published on strata/<id>/inventory
// at every connect and every inventory interval. Each top-level key becomes
// a variable of the device's context; functions replaces its functions.
// Besides the fields, each installed release is also sent as a key
// software.<name> holding its version (MarshalJSON), so that a selector
// can name devices by version (var.software.<name>).
type Inventory struct {
	Hostname     string         `json:"hostname"`
	OS           string         `json:"os"`
	Arch         string         `json:"arch"`
	Distribution Distribution   `json:"distribution"`
	Kernel       string         `json:"kernel,omitempty"`
	CPUs         int            `json:"cpus"`
	MemoryBytes  uint64         `json:"memory_bytes,omitempty"`
	Disks        []Disk         `json:"disks"`
	Interfaces   []Interface    `json:"interfaces"`
	AgentVersion string         `json:"agent_version"`
	Functions    []FunctionInfo `json:"functions"`
	// Software lists the releases install put in place.
	Software []apitypes.InstalledSoftware `json:"software"`
}

// MarshalJSON encodes the fields and a software.<name> key per installed
// release.
func (inv Inventory) MarshalJSON() ([]byte, error) {
	type plain Inventory
	data, err := json.Marshal(plain(inv))
	if err != nil || len(inv.Software) == 0 {
		return data, err
	}
	var b bytes.Buffer
	b.Write(data[:len(data)-1])
	for _, s := range inv.Software {
		k, _ := json.Marshal(apitypes.SoftwareVariable(s.Name))
		v, _ := json.Marshal(s.Version)
		b.WriteByte(',')
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Distribution identifies the operating system release, from
// /etc/os-release on Linux.
type Distribution struct {
	ID      string `json:"id,omitempty"`
	Version string `json:"version,omitempty"`
	Name    string `json:"name,omitempty"`
}

// Disk is one mounted file system.
type Disk struct {
	Mount      string `json:"mount"`
	FSType     string `json:"fstype"`
	TotalBytes uint64 `json:"total_bytes"`
}

// Interface is one network interface other than loopback.
type Interface struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac,omitempty"`
	Addrs []string `json:"addrs"`
}

// Bounds on inventory lists: the node takes at most 64 KiB per variable, so
// a host with hundreds of interfaces or mounts must not make the whole
// inventory invalid. The first entries are kept.
const (
	maxInventoryItems = 64 // disks, interfaces
	maxInterfaceAddrs = 16
)

// Platform returns the operating system and architecture the agent runs
// on, as Go names them ("linux", "arm64"): the key for distributing
// software built for the device.
func Platform() (goos, goarch string) { return runtime.GOOS, runtime.GOARCH }

// GatherInventory describes this host. What cannot be read is left empty
// rather than failing the whole inventory. Functions and AgentVersion are
// left for the caller to fill.
func GatherInventory(ctx context.Context) Inventory {
	inv := Inventory{CPUs: runtime.NumCPU(), Disks: []Disk{}, Interfaces: []Interface{}, Functions: []FunctionInfo{},
		Software: []apitypes.InstalledSoftware{}}
	inv.OS, inv.Arch = Platform()
	inv.Hostname, _ = os.Hostname()
	inv.Distribution = readOSRelease("/etc/os-release")
	if inv.Distribution == (Distribution{}) {
		inv.Distribution = readOSRelease("/usr/lib/os-release")
	}
	if k, err := host.KernelVersionWithContext(ctx); err == nil {
		inv.Kernel = k
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		inv.MemoryBytes = vm.Total
	}
	inv.Disks = gatherDisks(ctx)
	inv.Interfaces = gatherInterfaces()
	return inv
}

// readOSRelease reads ID, VERSION_ID and PRETTY_NAME (else NAME) from an
// os-release file.
func readOSRelease(path string) Distribution {
	f, err := os.Open(path)
	if err != nil {
		return Distribution{}
	}
	defer f.Close()
	var d Distribution
	var name string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, `"'`)
		}
		switch k {
		case "ID":
			d.ID = v
		case "VERSION_ID":
			d.Version = v
		case "PRETTY_NAME":
			d.Name = v
		case "NAME":
			name = v
		}
	}
	if d.Name == "" {
		d.Name = name
	}
	return d
}

// gatherDisks lists the physical file systems, always including the root.
func gatherDisks(ctx context.Context) []Disk {
	disks := []Disk{}
	parts, _ := disk.PartitionsWithContext(ctx, false)
	seen := map[string]bool{}
	mounts := []string{"/"}
	fstype := map[string]string{} // statfs only knows "ext2/ext3" for ext4
	for _, p := range parts {
		mounts = append(mounts, p.Mountpoint)
		fstype[p.Mountpoint] = p.Fstype
	}
	for _, m := range mounts {
		if seen[m] || len(disks) == maxInventoryItems {
			continue
		}
		seen[m] = true
		u, err := disk.UsageWithContext(ctx, m)
		if err != nil || u.Total == 0 {
			continue
		}
		fs := fstype[m]
		if fs == "" {
			fs = u.Fstype
		}
		disks = append(disks, Disk{Mount: m, FSType: fs, TotalBytes: u.Total})
	}
	return disks
}

// gatherInterfaces lists the network interfaces except loopback, with their
// addresses in CIDR notation.
func gatherInterfaces() []Interface {
	out := []Interface{}
	ifs, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || len(out) == maxInventoryItems {
			continue
		}
		i := Interface{Name: ifc.Name, MAC: ifc.HardwareAddr.String(), Addrs: []string{}}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			i.Addrs = append(i.Addrs, a.String())
		}
		slices.Sort(i.Addrs)
		if len(i.Addrs) > maxInterfaceAddrs {
			i.Addrs = i.Addrs[:maxInterfaceAddrs]
		}
		out = append(out, i)
	}
	return out
}
