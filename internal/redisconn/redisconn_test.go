package redisconn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/events"
	"wasessions/internal/queue"
	"wasessions/internal/redisconn"
	"wasessions/internal/testenv"
	"wasessions/tasks"
)

const (
	adminPass = "requirepass-0123456789"
	appUser   = "wasessions"
	appPass   = "acl-user-pass-0123456789"
)

// works checks that everything the programs do with Redis works over a
// client opened from url: a ping, an enqueue through asynq, an event
// through the hub (pub/sub), and asynqmon's own connections (the asynq
// inspector on AsynqConnOpt, as the monitor opens them).
func works(t *testing.T, url, caFile string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts, err := redisconn.Options(url, caFile)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	enq := queue.New(rdb)
	j, err := tasks.NewCreate("whatsapp_redisconn_test", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enq.Enqueue(ctx, j, false); err != nil {
		t.Fatalf("asynq enqueue: %v", err)
	}
	bus := events.NewBus(rdb)
	hub := events.NewHub(bus, events.HubOptions{})
	defer hub.Close()
	const user = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	l, err := hub.Stream(ctx, user)
	if err != nil {
		t.Fatalf("hub: %v", err)
	}
	if err := bus.Publish(ctx, events.Event{Type: events.TypeStatus, SessionID: "s", UserID: user, Status: "qr"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.C:
	case <-ctx.Done():
		t.Fatal("no event through the hub")
	}
	insp := asynq.NewInspector(redisconn.AsynqConnOpt(opts))
	defer insp.Close()
	if _, err := insp.GetQueueInfo(tasks.QueueShared); err != nil {
		t.Fatalf("asynqmon's connection (inspector): %v", err)
	}
}

// refused checks that url cannot reach Redis, with an error containing want.
func refused(t *testing.T, url, caFile, want string) {
	t.Helper()
	rdb, err := redisconn.Open(url, caFile)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	err = rdb.Ping(context.Background()).Err()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: ping error %v, want one containing %q", url, err, want)
	}
}

// A Redis with requirepass and an ACL user: the URL's credentials reach
// every user of Redis (asynq, events, the monitor's own connections);
// without them, or with wrong ones, Redis refuses.
func TestPasswordAndACLUser(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServerArgs(t, "--requirepass", adminPass,
		"--user", appUser, "on", ">"+appPass, "~*", "&*", "+@all")
	works(t, "redis://:"+adminPass+"@"+rs.Addr+"/0", "")
	works(t, "redis://"+appUser+":"+appPass+"@"+rs.Addr+"/0", "")
	refused(t, "redis://"+rs.Addr+"/0", "", "NOAUTH")
	refused(t, "redis://"+appUser+":wrong@"+rs.Addr+"/0", "", "WRONGPASS")
}

// A Redis that speaks only TLS, with a certificate from a private CA:
// rediss:// with REDIS_TLS_CA_FILE works for everything; without the CA
// the certificate is refused (it is verified, not skipped); plain
// redis:// gets nowhere.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	rs := testenv.StartRedisServerArgs(t, "--port", "0", "--tls-port", "{port}",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no",
		"--requirepass", adminPass)
	works(t, "rediss://:"+adminPass+"@"+rs.Addr+"/0", ca)
	refused(t, "rediss://:"+adminPass+"@"+rs.Addr+"/0", "", "certificate")
	rdb, err := redisconn.Open("redis://:"+adminPass+"@"+rs.Addr+"/0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("plain redis:// talked to a TLS-only server")
	}
}

func TestOptionsRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, _, _ := writeCerts(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, ca, want string }{
		{"http://:secret-pass@127.0.0.1:6379/0", "", "not a valid"},
		{"redis://127.0.0.1:6379/0", ca, "not rediss://"},
		{"rediss://127.0.0.1:6379/0", filepath.Join(dir, "missing.pem"), "REDIS_TLS_CA_FILE"},
		{"rediss://127.0.0.1:6379/0", notPEM, "no PEM"},
	} {
		_, err := redisconn.Options(tc.url, tc.ca)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Options(%q, %q) = %v, want an error containing %q", tc.url, tc.ca, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret-pass") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
}

// Sentinel settings are checked before anything dials, and their
// errors never show a password.
func TestSentinelSettingsRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    redisconn.Settings
		want string
	}{
		{redisconn.Settings{URL: "redis://:secret-pass@x:6379/0", SentinelAddrs: []string{"127.0.0.1:26379"}}, "REDIS_SENTINEL_MASTER is not"},
		{redisconn.Settings{URL: "redis://:secret-pass@x:6379/0", SentinelMaster: "m"}, "REDIS_SENTINEL_ADDRS is not"},
		{redisconn.Settings{URL: "redis://:secret-pass@x:6379/0", SentinelAddrs: []string{"127.0.0.1"}, SentinelMaster: "m"}, "not host:port"},
		{redisconn.Settings{URL: "nope://:secret-pass@x", SentinelAddrs: []string{"127.0.0.1:26379"}, SentinelMaster: "m"}, "not a valid"},
	} {
		_, err := redisconn.New(tc.s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("New(%+v) = %v, want an error containing %q", tc.s, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret-pass") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	c, err := redisconn.New(redisconn.Settings{URL: "redis://:pw@x:6379/4", SentinelAddrs: []string{"127.0.0.1:26379"}, SentinelMaster: "m"})
	if err != nil || c.DB() != 4 {
		t.Fatalf("New with Sentinel: db %v, %v; want 4", c, err)
	}
}

// A caller's deadline bounds its command (ContextTimeoutEnabled, plain and
// Sentinel): on a Redis that accepts connections and never answers, a
// command with a 300 ms deadline fails then, not after ReadTimeout (5 s)
// per attempt. A deadline only shortens a wait: a blocking command whose
// block outlasts ReadTimeout, under a deadline later still, waits out its
// block and gets its answer (asynq's own calls run without deadlines, or
// under the task's lease, and are unchanged).
//
// The 3 s bound is on a hang, not on speed: it is below the 5 s of the
// first ReadTimeout, so an error within it came from the deadline.
func TestCallersDeadlineBoundsAHang(t *testing.T) {
	t.Parallel()
	for _, s := range []redisconn.Settings{
		{URL: "redis://127.0.0.1:6379/0"},
		{URL: "redis://127.0.0.1:6379/0", SentinelAddrs: []string{"127.0.0.1:26379"}, SentinelMaster: "m"},
	} {
		c, err := redisconn.New(s)
		if err != nil {
			t.Fatal(err)
		}
		cl := c.Client()
		if !cl.Options().ContextTimeoutEnabled {
			t.Errorf("sentinel %v: the client ignores context deadlines", s.Sentinel())
		}
		cl.Close()
	}

	r := testenv.NewRedisDB(t)
	p := testenv.NewFaultProxy(t, "redis", r.Addr)
	c := p.ProxyRedis(r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.BLPop(ctx, 6*time.Second, "redisconn-test-empty").Err(); err != redis.Nil {
		t.Fatalf("BLPOP for 6 s under a 20 s deadline = %v, want redis.Nil (no element)", err)
	}

	p.Hang()
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	start := time.Now()
	if err := c.Ping(dctx).Err(); err == nil {
		t.Fatal("PING answered through a hung Redis")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("PING with a 300 ms deadline failed after %v on a hung Redis", took.Round(time.Millisecond))
	}
}

// writeCerts writes a self-signed CA and a server certificate it signed
// for 127.0.0.1, as PEM files in dir.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wasessions test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}
