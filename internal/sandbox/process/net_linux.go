//go:build linux

package process

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Outbound network (network: outbound) for an instance is a veth pair: the
// host end, named vethPrefix + the hex of its address, stays on the host; the
// other end is created directly inside the instance's network namespace as
// "eth0". Both ends get the two usable addresses of a /30 out of
// Options.OutboundRange; the instance's default route goes through the host
// end. One nftables table per driver (inet family, named after the state
// directory's hash) does the rest, for every interface whose name starts with
// vethPrefix (the instances of every driver on the host):
//
//   - input: anything arriving from an instance is rejected, so an instance
//     reaches no address of the host itself (the veth host end, the host's
//     other addresses, any port, IPv4 or IPv6 link-local);
//   - forward: instance to instance is dropped, as is link-local
//     169.254.0.0/16 (cloud metadata services); connections into an instance
//     from outside are dropped unless they belong to a connection it opened;
//   - postrouting: IPv4 from the range leaving through any non-instance
//     interface is masqueraded.
//
// IPv4 forwarding (net.ipv4.ip_forward) is switched on at the first outbound
// start and left on.
const vethPrefix = "aloft"

// network is a driver's share of the host's network: its nftables table and
// the allocation of /30s out of its range.
type network struct {
	rng   netip.Prefix
	table string // nftables table name, inet family
	alias string // IFLA_IFALIAS of the driver's host ends
	log   *slog.Logger

	mu      sync.Mutex
	next    uint32 // next slot to try
	err     error  // why outbound is unavailable, if it is
	forward bool   // ip_forward checked
}

func newNetwork(rng netip.Prefix, id string, log *slog.Logger) (*network, error) {
	rng = rng.Masked()
	if !rng.Addr().Is4() || rng.Bits() > 30 {
		return nil, fmt.Errorf("outbound range %s: want an IPv4 prefix of /30 or larger", rng)
	}
	return &network{rng: rng, table: "aloft-" + id, alias: "aloft:" + id, log: log}, nil
}

// cleanup removes what a previous driver on the same state directory left:
// its nftables table and the host ends of its veths (most disappear with the
// instances' namespaces; a namespace kept alive elsewhere would keep its pair).
func (n *network) cleanup() error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		errs = append(errs, fmt.Errorf("cannot list links: %w", err))
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && strings.HasPrefix(a.Name, vethPrefix) && a.Alias == n.alias {
			if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("cannot delete veth %s: %w", a.Name, err))
			}
		}
	}
	if err := n.deleteTable(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteTable removes the driver's nftables table if it exists.
func (n *network) deleteTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("cannot open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("cannot list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == n.table {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("cannot delete nftables table %s: %w", n.table, err)
			}
		}
	}
	return nil
}

// setup installs the driver's nftables table (replacing it if present). Its
// error names what the host lacks.
func (n *network) setup() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables (cannot open netlink: %w)", err)
	}
	t := &nftables.Table{Name: n.table, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t) // AddTable+DelTable in one batch: replace whatever was there
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	// Priorities just before the usual filter chains, so a verdict here comes
	// first; a drop anywhere else still drops.
	input := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-10), Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-10), Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})

	pfx := []byte(vethPrefix)
	iif := func(op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: pfx},
		}
	}
	oif := func(op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: pfx},
		}
	}
	ipv4 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	// prefixMatch matches the IPv4 source (offset 12) or destination (16)
	// address against p.
	prefixMatch := func(offset uint32, p netip.Prefix) []expr.Any {
		mask := net.CIDRMask(p.Bits(), 32)
		a := p.Addr().As4()
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
		}
	}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		var exprs []expr.Any
		for _, p := range parts {
			exprs = append(exprs, p...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	verdict := func(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
	reject := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}

	// Nothing from an instance reaches the host itself.
	rule(input, iif(expr.CmpOpEq), reject)
	// Instances never reach each other, nor link-local services.
	rule(fwd, iif(expr.CmpOpEq), oif(expr.CmpOpEq), reject)
	rule(fwd, iif(expr.CmpOpEq), ipv4, prefixMatch(16, netip.MustParsePrefix("169.254.0.0/16")), reject)
	// From outside into an instance: replies only.
	rule(fwd, oif(expr.CmpOpEq), []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			Xor:  make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}, verdict(expr.VerdictAccept))
	rule(fwd, oif(expr.CmpOpEq), verdict(expr.VerdictDrop))
	// Masquerade what leaves the host.
	rule(post, ipv4, prefixMatch(12, n.rng), oif(expr.CmpOpNeq), []expr.Any{&expr.Masq{}})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables with inet filter and nat chains, masquerade and reject (kernel: %w)", err)
	}
	return nil
}

// available reports why outbound networking cannot work (nil when it can).
func (n *network) available() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// enableForwarding turns IPv4 forwarding on (once per driver).
func (n *network) enableForwarding() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.forward {
		return nil
	}
	const path = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("cannot enable IPv4 forwarding: %w", err)
		}
		n.log.Info("enabled IPv4 forwarding for outbound function networking")
	}
	n.forward = true
	return nil
}

// slots is the number of /30s in the range.
func (n *network) slots() uint32 { return 1 << (30 - n.rng.Bits()) }

// slotAddrs returns the host end's and the instance's address of slot i.
func (n *network) slotAddrs(i uint32) (host, inst netip.Addr) {
	b := n.rng.Addr().As4()
	base := binary.BigEndian.Uint32(b[:]) + i*4
	binary.BigEndian.PutUint32(b[:], base+1)
	host = netip.AddrFrom4(b)
	binary.BigEndian.PutUint32(b[:], base+2)
	return host, netip.AddrFrom4(b)
}

// hostEndName is the name of the host end for a host address; the name is
// what reserves the /30 among all drivers on the host (creating a link whose
// name exists fails).
func hostEndName(host netip.Addr) string {
	b := host.As4()
	return fmt.Sprintf("%s%08x", vethPrefix, binary.BigEndian.Uint32(b[:]))
}

// attach gives the network namespace of pid a veth with a /30 and a default
// route, and returns the host end's name.
func (n *network) attach(pid int) (string, error) {
	if err := n.available(); err != nil {
		return "", fmt.Errorf("outbound network unavailable: missing %w", err)
	}
	if err := n.enableForwarding(); err != nil {
		return "", err
	}
	nsFd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("cannot open instance network namespace: %w", err)
	}
	defer unix.Close(nsFd)

	// Addresses the host already uses are never handed out.
	used := map[netip.Addr]bool{}
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4); err == nil || errors.Is(err, netlink.ErrDumpInterrupted) {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				used[ip] = true
			}
		}
	}
	var (
		name       string
		host, inst netip.Addr
		veth       *netlink.Veth
	)
	slots := n.slots()
	for try := uint32(0); ; try++ {
		if try == slots {
			return "", fmt.Errorf("cannot attach outbound network: no free /30 left in %s", n.rng)
		}
		n.mu.Lock()
		slot := n.next % slots
		n.next++
		n.mu.Unlock()
		host, inst = n.slotAddrs(slot)
		if used[host] || used[inst] {
			continue
		}
		name = hostEndName(host)
		veth = &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(nsFd),
		}
		err := netlink.LinkAdd(veth)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("cannot create veth: %w", err)
		}
	}
	fail := func(what string, err error) (string, error) {
		_ = netlink.LinkDel(veth)
		return "", fmt.Errorf("cannot %s: %w", what, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fail("find veth", err)
	}
	if err := netlink.LinkSetAlias(link, n.alias); err != nil {
		return fail("label veth", err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(host, 30)}); err != nil {
		return fail("address veth", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail("set veth up", err)
	}

	h, err := netlink.NewHandleAt(netns.NsHandle(nsFd))
	if err != nil {
		return fail("enter instance network namespace", err)
	}
	defer h.Close()
	peer, err := h.LinkByName("eth0")
	if err != nil {
		return fail("find instance veth", err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(inst, 30)}); err != nil {
		return fail("address instance veth", err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		return fail("set instance veth up", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: net.IP(host.AsSlice())}); err != nil {
		return fail("add default route", err)
	}
	return name, nil
}

// detach deletes an instance's veth pair (gone already when its namespace
// died).
func (n *network) detach(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("cannot find veth %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("cannot delete veth %s: %w", name, err)
	}
	return nil
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
