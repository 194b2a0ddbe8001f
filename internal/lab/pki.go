//go:build linux

package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// APIServerIP is the lab API server's address (in <Prefix>api).
const APIServerIP = "198.18.0.2"

// pki writes a CA, the API server's serving certificate, client
// certificates (admin in system:masters; one per kubelet in system:nodes,
// as the Node authorizer and NodeRestriction expect), the service-account
// signing key pair and the admin kubeconfig. ECDSA P-256, one year.
func (l *Lab) pki(context.Context) error {
	dir := l.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, caKey, err := newCA()
	if err != nil {
		return err
	}
	if err := writeCert(dir, "ca", ca, caKey); err != nil {
		return err
	}
	issue := func(name string, subj pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) error {
		crt, key, err := newCert(ca, caKey, subj, usage, ips, dns)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", name, err)
		}
		return writeCert(dir, name, crt, key)
	}
	if err := issue("apiserver", pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP(APIServerIP), net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return err
	}
	if err := issue("admin", pkix.Name{CommonName: "wrenlab-admin", Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	for n := 1; n <= 9; n++ {
		name := nodeName(n)
		if err := issue(name, pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
			return err
		}
		if err := l.writeKubeconfig(l.path("pki", name+".kubeconfig"), name); err != nil {
			return err
		}
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(dir+"/sa.key", "EC PRIVATE KEY", der); err != nil {
		return err
	}
	if err := writePEM(dir+"/sa.pub", "PUBLIC KEY", pub); err != nil {
		return err
	}
	return l.writeKubeconfig(l.kubeconfig(), "admin")
}

// kubeconfig is the admin kubeconfig (server https://198.18.0.2:6443,
// reachable only inside the lab's namespaces).
func (l *Lab) kubeconfig() string { return l.path("kubeconfig") }

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "wrenlab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	crt, err := x509.ParseCertificate(der)
	return crt, key, err
}

func newCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, subj pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subj,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		IPAddresses:           ips,
		DNSNames:              dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	crt, err := x509.ParseCertificate(der)
	return crt, key, err
}

func writeCert(dir, name string, crt *x509.Certificate, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(dir+"/"+name+".key", "EC PRIVATE KEY", der); err != nil {
		return err
	}
	return writePEM(dir+"/"+name+".crt", "CERTIFICATE", crt.Raw)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// writeKubeconfig writes a kubeconfig for the client certificate pki/<user>.
func (l *Lab) writeKubeconfig(path, user string) error {
	b64 := func(f string) (string, error) {
		b, err := os.ReadFile(l.path("pki", f))
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err := b64("ca.crt")
	if err != nil {
		return err
	}
	crt, err := b64(user + ".crt")
	if err != nil {
		return err
	}
	key, err := b64(user + ".key")
	if err != nil {
		return err
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: wrenlab
  cluster:
    server: https://%s:6443
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: wrenlab
  context: {cluster: wrenlab, user: %s}
current-context: wrenlab
`, APIServerIP, ca, user, crt, key, user)
	return os.WriteFile(path, []byte(kc), 0o600)
}
