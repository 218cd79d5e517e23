// csrcheck sends one real CSR to istiod's CA service (IstioCertificateService.CreateCertificate,
// gRPC over TLS on the secure port) the way a remote cluster's istio-agent does, and checks that
// the returned chain's leaf carries the expected SPIFFE identity and chains to the given root.
//
// The bearer token is read from --token-file ("-" = stdin) and is never printed.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"
)

func main() {
	addr := flag.String("addr", os.Getenv("ISTIOD_ADDR"), "istiod secure gRPC address host:port (default $ISTIOD_ADDR)")
	serverName := flag.String("server-name", "istiod.istio-system.svc", "TLS server name to verify istiod's serving cert against")
	rootFile := flag.String("root", "", "PEM file with the mesh root (plug-in root-cert.pem): the issued chain must end in it")
	tlsRootFile := flag.String("tls-root", "", "PEM file with the roots istiod's serving certificate is verified with (default: --root; a public CA for an istiod with CA_ADDR's root SYSTEM)")
	tokenFile := flag.String("token-file", "-", "file holding the bearer token, - for stdin (never printed)")
	clusterID := flag.String("cluster-id", "remote", "value of the clusterid gRPC metadata")
	wantSAN := flag.String("want-san", "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway-service-account", "URI SAN the leaf must carry")
	ttl := flag.Duration("ttl", time.Hour, "requested validity")
	timeout := flag.Duration("timeout", 20*time.Second, "overall timeout")
	flag.Parse()

	if *tlsRootFile == "" {
		*tlsRootFile = *rootFile
	}
	if err := run(*addr, *serverName, *rootFile, *tlsRootFile, *tokenFile, *clusterID, *wantSAN, *ttl, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "csrcheck: FAIL: %v\n", err)
		os.Exit(1)
	}
}

func readToken(path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("reading token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("empty token")
	}
	return tok, nil
}

func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

func run(addr, serverName, rootFile, tlsRootFile, tokenFile, clusterID, wantSAN string, ttl, timeout time.Duration) error {
	if addr == "" {
		return errors.New("--addr (or ISTIOD_ADDR) is required")
	}
	if rootFile == "" {
		return errors.New("--root is required")
	}
	rootPEM, err := os.ReadFile(rootFile)
	if err != nil {
		return err
	}
	roots, err := parsePEMCerts(rootPEM)
	if err != nil {
		return fmt.Errorf("root %s: %w", rootFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tlsPool := pool
	if tlsRootFile != rootFile {
		b, err := os.ReadFile(tlsRootFile)
		if err != nil {
			return err
		}
		tlsRoots, err := parsePEMCerts(b)
		if err != nil {
			return fmt.Errorf("tls root %s: %w", tlsRootFile, err)
		}
		tlsPool = x509.NewCertPool()
		for _, r := range tlsRoots {
			tlsPool.AddCert(r)
		}
	}
	token, err := readToken(tokenFile)
	if err != nil {
		return err
	}

	// A CSR like istio-agent's: EC P-256 key, the identity as URI SAN (istiod ignores the
	// CSR's SANs and signs for the identity it authenticated).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	u, err := url.Parse(wantSAN)
	if err != nil {
		return fmt.Errorf("--want-san: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"meshtrace-testbed"}},
		URIs:    []*url.URL{u},
	}, key)
	if err != nil {
		return err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var served []*x509.Certificate
	creds := credentials.NewTLS(&tls.Config{RootCAs: tlsPool, ServerName: serverName, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error { served = cs.PeerCertificates; return nil }})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token, "clusterid", clusterID)
	fmt.Printf("csrcheck: CreateCertificate -> %s (server name %s, clusterid %q, ttl %s)\n", addr, serverName, clusterID, ttl)
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: int64(ttl.Seconds()),
	})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("CreateCertificate: code=%s message=%q", st.Code(), st.Message())
		}
		return fmt.Errorf("CreateCertificate: %w", err)
	}
	if len(served) > 0 {
		c := served[0]
		fmt.Printf("csrcheck: istiod's serving certificate: DNS SANs %v, issuer %q, %d cert(s) served; verified for %s against %s\n",
			c.DNSNames, c.Issuer.String(), len(served), serverName, tlsRootFile)
	}
	chainPEM := resp.GetCertChain()
	if len(chainPEM) < 2 {
		return fmt.Errorf("cert_chain has %d element(s); want leaf ... root", len(chainPEM))
	}
	var chain []*x509.Certificate
	for i, p := range chainPEM {
		cs, err := parsePEMCerts([]byte(p))
		if err != nil {
			return fmt.Errorf("cert_chain[%d]: %w", i, err)
		}
		chain = append(chain, cs...)
	}
	leaf := chain[0]
	var sans []string
	found := false
	for _, uri := range leaf.URIs {
		sans = append(sans, uri.String())
		if uri.String() == wantSAN {
			found = true
		}
	}
	fmt.Printf("csrcheck: chain of %d PEM element(s) / %d cert(s)\n", len(chainPEM), len(chain))
	for i, c := range chain {
		fmt.Printf("  [%d] subject=%q issuer=%q notBefore=%s notAfter=%s ca=%v\n", i, c.Subject.String(), c.Issuer.String(),
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), c.IsCA)
	}
	fmt.Printf("csrcheck: leaf URI SANs: %v\n", sans)
	if !found {
		return fmt.Errorf("leaf has no URI SAN %s", wantSAN)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("leaf does not verify against %s: %w", rootFile, err)
	}
	last := chain[len(chain)-1]
	rootMatch := false
	for _, r := range roots {
		if last.Equal(r) {
			rootMatch = true
		}
	}
	if !rootMatch {
		return fmt.Errorf("last element of cert_chain is not the given root (subject %q)", last.Subject.String())
	}
	fmt.Printf("csrcheck: OK: leaf has %s and chains to the root (last element of cert_chain)\n", wantSAN)
	return nil
}
