//go:build linux

package process

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testHost is a "remote" host for outbound tests: a network namespace of its
// own, connected to the host by a veth in a private /30 (never an address
// outside this machine), running a server that answers "from <peer IP>".
type testHost struct {
	addr   netip.Addr // the test host's address
	hostIP netip.Addr // the host's end of the link
	port   int
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	// Unique per test process, outside the driver's default range.
	k := os.Getpid() % 250
	th := &testHost{
		hostIP: netip.AddrFrom4([4]byte{10, 232, byte(k), 1}),
		addr:   netip.AddrFrom4([4]byte{10, 232, byte(k), 2}),
		port:   7777,
	}
	type made struct {
		fd  int
		ln  net.Listener
		err error
	}
	ch := make(chan made, 1)
	go func() {
		// The thread stays locked and dies with the goroutine, so it never
		// serves other goroutines from the test host's namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- made{err: err}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- made{err: err}
			return
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", th.port))
		ch <- made{fd: fd, ln: ln, err: err}
	}()
	m := <-ch
	if m.err != nil {
		t.Fatalf("cannot make test host namespace: %v", m.err)
	}
	t.Cleanup(func() { m.ln.Close(); unix.Close(m.fd) })
	go func() {
		for {
			c, err := m.ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "from %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()

	name := fmt.Sprintf("atest%04x", os.Getpid()&0xffff)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(m.fd)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("cannot create test host veth: %v", err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(th.hostIP, 30)}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(m.fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	peer, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(th.addr, 30)}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: net.IP(th.hostIP.AsSlice())}); err != nil {
		t.Fatal(err)
	}
	// The host itself reaches the test host directly.
	c, err := net.DialTimeout("tcp", th.server(), 5*time.Second)
	if err != nil {
		t.Fatalf("test host unreachable from the host: %v", err)
	}
	c.Close()
	return th
}

func (th *testHost) server() string {
	return net.JoinHostPort(th.addr.String(), fmt.Sprint(th.port))
}

// instanceAddrs returns the host end's and the instance's address of an
// outbound instance, read from the host.
func instanceAddrs(t *testing.T, r *running) (host, inst netip.Addr) {
	t.Helper()
	if r.inst.veth == "" {
		t.Fatal("outbound instance has no veth")
	}
	l, err := netlink.LinkByName(r.inst.veth)
	if err != nil {
		t.Fatalf("veth %s: %v", r.inst.veth, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 {
		t.Fatalf("veth %s addresses: got %v, %v; want one", r.inst.veth, addrs, err)
	}
	host, _ = netip.AddrFromSlice(addrs[0].IP.To4())
	return host, host.Next()
}

func outbound(s *sandbox.Spec) { s.Network = "outbound" }

// TestOutboundNetwork: an outbound instance reaches a test host (its
// connections masqueraded to the host's address on that link) but no address
// of the host itself and no other instance; a network "none" instance reaches
// nothing; Stop and Close leave no veth and no table.
func TestOutboundNetwork(t *testing.T) {
	d := newDriver(t, Options{})
	if err := d.net.available(); err != nil {
		t.Fatalf("outbound network unavailable on this host: %v", err)
	}
	if got := strings.Join(d.Isolation().Enabled, "; "); !strings.Contains(got, "outbound network") {
		t.Errorf("Isolation().Enabled: got %q, want it to mention outbound network", got)
	}
	th := newTestHost(t)
	apiPort := hostListener(t, "127.0.0.1:0").Addr().(*net.TCPAddr).Port
	anyPort := hostListener(t, "0.0.0.0:0").Addr().(*net.TCPAddr).Port

	a := start(t, d, outbound, true)
	b := start(t, d, outbound, true)
	none := start(t, d, nil, true)
	aHost, aAddr := instanceAddrs(t, a)
	_, bAddr := instanceAddrs(t, b)
	if got := b.invoke(t, "serve:8080"); !strings.HasPrefix(got, "ok:") {
		t.Fatalf("serve in b: got %q", got)
	}
	bServer := net.JoinHostPort(bAddr.String(), "8080")

	tests := []struct {
		name string
		r    *running
		op   string
		want string // prefix of the answer
	}{
		{"reach test host, masqueraded", a, "talk:" + th.server(), "ok: from " + th.hostIP.String()},
		{"second instance reaches test host", b, "talk:" + th.server(), "ok: from " + th.hostIP.String()},
		{"own address", a, "addrs", "ok: 127.0.0.1/8 " + aAddr.String() + "/30"},
		{"veth host end, host listener", a, fmt.Sprintf("connect:%s:%d", aHost, anyPort), "err:"},
		{"veth host end, api port", a, fmt.Sprintf("connect:%s:%d", aHost, apiPort), "err:"},
		{"host end of the test host link", a, fmt.Sprintf("connect:%s:%d", th.hostIP, anyPort), "err:"},
		{"host loopback", a, fmt.Sprintf("connect:127.0.0.1:%d", apiPort), "err:"},
		{"other instance", a, "talk:" + bServer, "err:"},
		{"other instance serves itself", b, "talk:" + bServer, "ok: from " + bAddr.String()},
		{"network none reaches no test host", none, "talk:" + th.server(), "err:"},
	}
	if ip := hostAddress(); ip != "" {
		tests = append(tests, struct {
			name string
			r    *running
			op   string
			want string
		}{"host address", a, fmt.Sprintf("connect:%s:%d", ip, anyPort), "err:"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.invoke(t, tt.op)
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("%s: got %q, want prefix %q", tt.op, got, tt.want)
			}
		})
	}

	veth := a.inst.veth
	if err := a.inst.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := netlink.LinkByName(veth); !isNotFound(err) {
		t.Errorf("veth %s after Stop: got %v, want not found", veth, err)
	}
	if got := b.invoke(t, "talk:"+th.server()); !strings.HasPrefix(got, "ok:") {
		t.Errorf("b after a stopped: got %q, want ok", got)
	}
	if got := driverLinks(t, d); len(got) != 1 || got[0] != b.inst.veth {
		t.Errorf("driver veths: got %v, want only b's %s", got, b.inst.veth)
	}
	if !hasTable(t, d.net.table) {
		t.Errorf("nftables table %s missing while the driver runs", d.net.table)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := driverLinks(t, d); len(got) != 0 {
		t.Errorf("driver veths after Close: %v", got)
	}
	if hasTable(t, d.net.table) {
		t.Errorf("nftables table %s left after Close", d.net.table)
	}
}

// TestOutboundCleanupAfterCrash: a new driver on the state directory of one
// that never closed removes its veths and replaces its table.
func TestOutboundCleanupAfterCrash(t *testing.T) {
	needIsolation(t)
	state := t.TempDir()
	old, err := New(Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, old, outbound, true)
	veth := r.inst.veth
	crash(old)

	d := newDriver(t, Options{StateDir: state})
	select {
	case <-r.inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("leftover instance still runs after New")
	}
	if _, err := netlink.LinkByName(veth); !isNotFound(err) {
		t.Errorf("leftover veth %s: got %v, want not found", veth, err)
	}
	th := newTestHost(t)
	if got := start(t, d, outbound, true).invoke(t, "talk:"+th.server()); !strings.HasPrefix(got, "ok: from") {
		t.Errorf("new instance: got %q, want ok", got)
	}
}

func TestOutboundRangeAllocation(t *testing.T) {
	tests := []struct {
		name       string
		rng        string
		slot       uint32
		host, inst string
		slots      uint32
		err        bool
	}{
		{"first", "10.231.0.0/16", 0, "10.231.0.1", "10.231.0.2", 16384, false},
		{"second", "10.231.0.0/16", 1, "10.231.0.5", "10.231.0.6", 16384, false},
		{"carry", "10.231.0.0/16", 64, "10.231.1.1", "10.231.1.2", 16384, false},
		{"unmasked", "10.231.7.9/24", 2, "10.231.7.9", "10.231.7.10", 64, false},
		{"single /30", "192.168.9.4/30", 0, "192.168.9.5", "192.168.9.6", 1, false},
		{"too small", "10.0.0.0/31", 0, "", "", 0, true},
		{"ipv6", "fd00::/64", 0, "", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := newNetwork(netip.MustParsePrefix(tt.rng), "x", nil)
			if tt.err {
				if err == nil {
					t.Fatalf("newNetwork(%s): got no error", tt.rng)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			host, inst := n.slotAddrs(tt.slot)
			if host.String() != tt.host || inst.String() != tt.inst {
				t.Errorf("slot %d: got %s, %s; want %s, %s", tt.slot, host, inst, tt.host, tt.inst)
			}
			if got := n.slots(); got != tt.slots {
				t.Errorf("slots: got %d, want %d", got, tt.slots)
			}
		})
	}
	if got, want := hostEndName(netip.MustParsePrefix("10.231.0.1/32").Addr()), "aloft0ae70001"; got != want {
		t.Errorf("hostEndName: got %q, want %q", got, want)
	}
}

// driverLinks lists the host ends labelled with d's alias.
func driverLinks(t *testing.T, d *Driver) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Alias == d.net.alias {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func hasTable(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}
