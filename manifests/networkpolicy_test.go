package manifests_test

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// endpoint is one end of a connection the tests ask the rendered
// NetworkPolicies about: a Pod (namespace, labels and its IP) or an address
// outside the cluster (no namespace).
type endpoint struct {
	name      string
	namespace string
	labels    map[string]string
	ip        netip.Addr
}

func (e endpoint) isPod() bool { return e.namespace != "" }

// The Pods and addresses of a typical EKS cluster: Pods and Services in the
// VPC's private range.
var (
	buildPod     = endpoint{"a build Pod", "decap", map[string]string{"type": "decap-build", "team": "t", "project": "p"}, netip.MustParseAddr("10.0.5.7")}
	otherBuild   = endpoint{"another build Pod", "decap", map[string]string{"type": "decap-build", "team": "u", "project": "q"}, netip.MustParseAddr("10.0.5.8")}
	ingestPod    = endpoint{"an ingest Pod", "decap-system", map[string]string{"app.kubernetes.io/name": "decap", "app.kubernetes.io/component": "ingest"}, netip.MustParseAddr("10.0.6.10")}
	dispatchPod  = endpoint{"a dispatcher Pod", "decap-system", map[string]string{"app.kubernetes.io/name": "decap", "app.kubernetes.io/component": "dispatcher"}, netip.MustParseAddr("10.0.6.11")}
	reaperPod    = endpoint{"a reaper Pod", "decap-system", map[string]string{"app.kubernetes.io/name": "decap", "app.kubernetes.io/component": "reaper"}, netip.MustParseAddr("10.0.6.12")}
	kubeDNS      = endpoint{"CoreDNS", "kube-system", map[string]string{"k8s-app": "kube-dns"}, netip.MustParseAddr("10.0.1.2")}
	otherSystem  = endpoint{"another kube-system Pod", "kube-system", map[string]string{"k8s-app": "metrics-server"}, netip.MustParseAddr("10.0.1.3")}
	ingressCtl   = endpoint{"an ingress controller", "ingress-nginx", map[string]string{"app": "ingress-nginx"}, netip.MustParseAddr("10.0.2.4")}
	imds         = endpoint{name: "the instance metadata endpoint", ip: netip.MustParseAddr("169.254.169.254")}
	imds6        = endpoint{name: "the instance metadata endpoint (IPv6)", ip: netip.MustParseAddr("fd00:ec2::254")}
	podIdentity  = endpoint{name: "the EKS Pod Identity agent", ip: netip.MustParseAddr("169.254.170.23")}
	serviceIP    = endpoint{name: "a ClusterIP Service", ip: netip.MustParseAddr("172.20.14.3")}
	homeRouter   = endpoint{name: "a private address", ip: netip.MustParseAddr("192.168.1.1")}
	cgnat        = endpoint{name: "a carrier-grade NAT address", ip: netip.MustParseAddr("100.64.3.4")}
	publicV4     = endpoint{name: "a public address", ip: netip.MustParseAddr("140.82.112.3")}
	s3           = endpoint{name: "S3", ip: netip.MustParseAddr("52.216.10.4")}
	publicV6     = endpoint{name: "a public IPv6 address", ip: netip.MustParseAddr("2606:50c0:8000::153")}
	githubWebhok = endpoint{name: "GitHub's webhook sender", ip: netip.MustParseAddr("192.30.252.1")}
)

// TestBuildPodNetwork checks the rendered NetworkPolicies as a CNI that
// enforces them would: a build Pod reaches DNS and public addresses, and not
// the metadata endpoint, the services, other Pods or private addresses
// (where a cluster's Pod and Service ranges are). ipBlocks are assumed to
// match Pod IPs too, as some network plugins do.
func TestBuildPodNetwork(t *testing.T) {
	t.Parallel()
	policies := render(t).networkPolicies
	tests := []struct {
		to    endpoint
		proto corev1.Protocol
		port  int32
		want  bool
	}{
		{kubeDNS, corev1.ProtocolUDP, 53, true},
		{kubeDNS, corev1.ProtocolTCP, 53, true},
		{kubeDNS, corev1.ProtocolTCP, 9153, false}, // CoreDNS's metrics
		{otherSystem, corev1.ProtocolUDP, 53, false},
		{publicV4, corev1.ProtocolTCP, 443, true},
		{s3, corev1.ProtocolTCP, 443, true},
		{publicV6, corev1.ProtocolTCP, 443, true},
		{imds, corev1.ProtocolTCP, 80, false},
		{imds6, corev1.ProtocolTCP, 80, false},
		{podIdentity, corev1.ProtocolTCP, 80, false},
		{ingestPod, corev1.ProtocolTCP, 8080, false},
		{dispatchPod, corev1.ProtocolTCP, 8081, false},
		{reaperPod, corev1.ProtocolTCP, 8082, false},
		{otherBuild, corev1.ProtocolTCP, 5432, false},
		{serviceIP, corev1.ProtocolTCP, 80, false},
		{homeRouter, corev1.ProtocolTCP, 80, false},
		{cgnat, corev1.ProtocolTCP, 80, false},
	}
	for _, tt := range tests {
		if got := allowed(t, policies, buildPod, tt.to, tt.proto, tt.port); got != tt.want {
			t.Errorf("%s to %s (%s) on %s/%d: allowed %v, want %v", buildPod.name, tt.to.name, tt.to.ip, tt.proto, tt.port, got, tt.want)
		}
	}
	for _, from := range []endpoint{otherBuild, ingestPod, ingressCtl, publicV4} {
		if allowed(t, policies, from, buildPod, corev1.ProtocolTCP, 8080) {
			t.Errorf("%s may connect to %s; want no ingress to build Pods", from.name, buildPod.name)
		}
	}
}

// TestServicesNetwork checks decap-system's ingress: the ingest port is open
// (webhooks, UI, API), everything else is closed.
func TestServicesNetwork(t *testing.T) {
	t.Parallel()
	policies := render(t).networkPolicies
	tests := []struct {
		from, to endpoint
		port     int32
		want     bool
	}{
		{ingressCtl, ingestPod, 8080, true},
		{githubWebhok, ingestPod, 8080, true},
		{ingressCtl, ingestPod, 8081, false},
		{ingressCtl, dispatchPod, 8081, false},
		{ingressCtl, reaperPod, 8082, false},
		{buildPod, dispatchPod, 8081, false},
		{publicV4, reaperPod, 8082, false},
	}
	for _, tt := range tests {
		if got := allowed(t, policies, tt.from, tt.to, corev1.ProtocolTCP, tt.port); got != tt.want {
			t.Errorf("%s to %s on %d: allowed %v, want %v", tt.from.name, tt.to.name, tt.port, got, tt.want)
		}
	}
}

// allowed reports whether the policies let from open a connection to to on
// proto/port, as the NetworkPolicy API defines it: a Pod selected by a policy
// of a direction is isolated in it, and then only what some rule of those
// policies allows gets through; both ends must allow it.
func allowed(t *testing.T, policies []networkingv1.NetworkPolicy, from, to endpoint, proto corev1.Protocol, port int32) bool {
	t.Helper()
	if from.isPod() && !direction(t, policies, from, networkingv1.PolicyTypeEgress, to, proto, port) {
		return false
	}
	return !to.isPod() || direction(t, policies, to, networkingv1.PolicyTypeIngress, from, proto, port)
}

// direction reports whether pod's policies of type dir let traffic with
// peer through.
func direction(t *testing.T, policies []networkingv1.NetworkPolicy, pod endpoint, dir networkingv1.PolicyType, peer endpoint, proto corev1.Protocol, port int32) bool {
	t.Helper()
	isolated := false
	for _, np := range policies {
		if np.Namespace != pod.namespace || !selects(t, &np.Spec.PodSelector, pod.labels) || !hasType(np.Spec, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range np.Spec.Egress {
				if portsMatch(t, r.Ports, proto, port) && peersMatch(t, np.Namespace, r.To, peer) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Ingress {
				if portsMatch(t, r.Ports, proto, port) && peersMatch(t, np.Namespace, r.From, peer) {
					return true
				}
			}
		}
	}
	return !isolated
}

// hasType applies the API's defaults: without policyTypes, a policy is
// about ingress, and about egress when it has egress rules.
func hasType(spec networkingv1.NetworkPolicySpec, dir networkingv1.PolicyType) bool {
	if len(spec.PolicyTypes) > 0 {
		return slices.Contains(spec.PolicyTypes, dir)
	}
	return dir == networkingv1.PolicyTypeIngress || len(spec.Egress) > 0
}

func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(set))
}

func portsMatch(t *testing.T, ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol, port int32) bool {
	t.Helper()
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.IntValue() == 0 {
			t.Errorf("named port %q in a NetworkPolicy: use numbers, which this test can check", p.Port.String())
			continue
		}
		end := int32(p.Port.IntValue())
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if port >= int32(p.Port.IntValue()) && port <= end {
			return true
		}
	}
	return false
}

// peersMatch reports whether a rule's peers (in a policy of namespace ns)
// include peer. An empty list is everyone. An ipBlock is taken to match a
// Pod's IP as well: whether it does depends on the network plugin.
func peersMatch(t *testing.T, ns string, peers []networkingv1.NetworkPolicyPeer, peer endpoint) bool {
	t.Helper()
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			if inBlock(t, p.IPBlock, peer.ip) {
				return true
			}
			continue
		}
		if !peer.isPod() {
			continue
		}
		nsOK := peer.namespace == ns
		if p.NamespaceSelector != nil {
			nsOK = selects(t, p.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": peer.namespace})
		}
		podOK := p.PodSelector == nil || selects(t, p.PodSelector, peer.labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func inBlock(t *testing.T, b *networkingv1.IPBlock, ip netip.Addr) bool {
	t.Helper()
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		t.Fatalf("ipBlock cidr %q: %v", b.CIDR, err)
	}
	if !cidr.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			t.Fatalf("ipBlock except %q: %v", e, err)
		}
		if !cidr.Contains(ex.Addr()) {
			t.Errorf("ipBlock %s: except %s is outside it (the API server refuses that)", b.CIDR, e)
		}
		if ex.Contains(ip) {
			return false
		}
	}
	return true
}
