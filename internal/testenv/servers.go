package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort asks the kernel for a free TCP port on loopback.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RedisServer is a private redis-server process for tests that stop and
// restart Redis, which they must never do to the shared one.
type RedisServer struct {
	t    testing.TB
	Addr string
	dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartRedisServer starts a private, non-persistent redis-server on a free
// loopback port. It is killed when the test ends.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	return StartRedisServerArgs(t)
}

// StartRedisServerArgs is StartRedisServer with more redis-server
// arguments, in which {port} stands for the server's port: a password
// (--requirepass), an ACL user (--user), or TLS (--port 0 --tls-port
// {port} and the certificate files: Addr is then the TLS port).
func StartRedisServerArgs(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("testenv: redis-server is not installed (scripts/services.sh installs it): %v", err)
	}
	s := &RedisServer{t: t, Addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), dir: t.TempDir(), args: args}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// URL is the redis:// URL of database 0 on the private server.
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// Start (re)starts the server on its address and waits until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--bind", "127.0.0.1", "--port", port, "--save", "",
		"--appendonly", "no", "--dir", s.dir, "--maxmemory-policy", "noeviction"}
	for _, a := range s.args {
		args = append(args, strings.ReplaceAll(a, "{port}", port))
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("testenv: start redis-server: %v", err)
	}
	s.cmd = cmd
	waitTCP(s.t, s.Addr, 10*time.Second)
}

// Stop kills the server; its data is gone, as after a crash without AOF.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// PostgresServer is a private Postgres cluster for tests that stop and
// restart Postgres.
type PostgresServer struct {
	t    testing.TB
	Port int
	dir  string
	bin  string
	asPG bool
}

// StartPostgresServer initialises a throwaway cluster (trust auth, fsync off)
// in a temporary directory and starts it on a free loopback port. When the
// test runs as root the cluster runs as the `postgres` system user, because
// Postgres refuses to run as root.
func StartPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	bin := postgresBinDir(t)
	s := newPostgresServer(t, "wasessions-pg-", bin, os.Geteuid() == 0)
	s.run("initdb", "-D", s.dir, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// newPostgresServer is a cluster not yet initialised: its data directory
// under a temporary directory (named with prefix, removed when the test
// ends) that the postgres system user owns when asPG (the test runs as
// root), and a free port.
func newPostgresServer(t testing.TB, prefix, bin string, asPG bool) *PostgresServer {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if asPG {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs the postgres system user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return &PostgresServer{t: t, Port: FreePort(t), dir: filepath.Join(base, "data"), bin: bin, asPG: asPG}
}

// AdminURL is the DSN of the cluster's postgres database.
func (s *PostgresServer) AdminURL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// NewDatabase creates a database on this private cluster (see NewDatabase).
func (s *PostgresServer) NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabaseOn(t, s.AdminURL())
}

// Start starts the cluster and waits until it accepts connections.
func (s *PostgresServer) Start() {
	s.t.Helper()
	s.run("pg_ctl", "-D", s.dir, "-l", filepath.Join(filepath.Dir(s.dir), "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", s.Port, filepath.Dir(s.dir)),
		"start")
}

// Stop shuts the cluster down immediately, dropping every connection.
func (s *PostgresServer) Stop() {
	s.t.Helper()
	if _, err := os.Stat(filepath.Join(s.dir, "postmaster.pid")); err != nil {
		return
	}
	s.run("pg_ctl", "-D", s.dir, "-m", "immediate", "-w", "stop")
}

func (s *PostgresServer) run(name string, args ...string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if s.asPG {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(s.bin, name)}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("testenv: %s %v: %v\n%s", name, args, err, out)
	}
}

func postgresBinDir(t testing.TB) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
		t.Fatalf("testenv: no Postgres server binaries (initdb) found; scripts/services.sh installs them")
	}
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) < versionOf(matches[j]) })
	return filepath.Dir(matches[len(matches)-1])
}

func versionOf(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

func waitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	err := Poll(within, 50*time.Millisecond, func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	if err != nil {
		t.Fatalf("testenv: %s did not accept connections: %v", addr, err)
	}
}
