package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"wasessions/internal/redisconn"
)

// Sentinel timings of a SentinelGroup: small, so that a failover takes a
// second or two instead of the production default of half a minute, and
// not so small that a busy 2-core machine makes the sentinels fail over a
// primary that is only slow.
const (
	SentinelDownAfter       = time.Second
	SentinelFailoverTimeout = 3 * time.Second
)

// SentinelGroup is Redis as a production deployment with failover runs it,
// on loopback: a primary, one replica, and three sentinels (quorum 2)
// monitoring them under the name Master. The primary and replica ask for
// Password, the sentinels for SentinelPassword, so a test shows that both
// credentials reach where they belong. Nothing is persisted: a killed
// server's writes exist only where they were replicated, as in an
// asynchronous-replication failover.
type SentinelGroup struct {
	t testing.TB
	// Master is the name the sentinels monitor the primary under.
	Master string
	// Password is the requirepass (and masterauth) of primary and replica.
	Password string
	// SentinelPassword is the sentinels' own requirepass.
	SentinelPassword string
	// Servers are the two data servers: Servers[0] starts as the primary,
	// Servers[1] as its replica.
	Servers   []*RedisServer
	sentinels []*sentinelProc

	mu      sync.Mutex
	clients map[string]*redis.Client
	sclient map[string]*redis.SentinelClient
}

type sentinelProc struct {
	addr string
	cmd  *exec.Cmd
}

// StartSentinelGroup starts the primary, its replica (and waits until it
// has synchronised), then the three sentinels, and returns once every
// sentinel knows the replica and the two other sentinels, i.e. once a
// failover can happen. Everything is killed when the test ends.
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	g := &SentinelGroup{t: t, Master: "wasessions", Password: "data-" + randomHex(8), SentinelPassword: "sentinel-" + randomHex(8),
		clients: map[string]*redis.Client{}, sclient: map[string]*redis.SentinelClient{}}
	t.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, c := range g.clients {
			c.Close()
		}
		for _, c := range g.sclient {
			c.Close()
		}
	})
	auth := []string{"--requirepass", g.Password, "--masterauth", g.Password}
	primary := StartRedisServerArgs(t, auth...)
	_, pport := splitAddr(primary.Addr)
	replica := StartRedisServerArgs(t, append(auth, "--replicaof", "127.0.0.1", pport)...)
	g.Servers = []*RedisServer{primary, replica}
	g.waitFor("the replica to synchronise", 20*time.Second, func(ctx context.Context) (bool, string) {
		info, err := g.dataClient(replica.Addr).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up"), fmt.Sprintf("%v %q", err, info)
	})

	for range 3 {
		g.sentinels = append(g.sentinels, g.startSentinel(pport))
	}
	g.waitFor("every sentinel to see the replica and the other sentinels", 30*time.Second, func(ctx context.Context) (bool, string) {
		for _, s := range g.sentinels {
			m, err := g.sentinelClient(s.addr).Master(ctx, g.Master).Result()
			if err != nil || m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" || m["flags"] != "master" {
				return false, fmt.Sprintf("sentinel %s: %v %v", s.addr, m, err)
			}
		}
		return true, ""
	})
	return g
}

func (g *SentinelGroup) startSentinel(primaryPort string) *sentinelProc {
	t := g.t
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	// The sentinel rewrites this file as it learns the group (replicas,
	// other sentinels, the new primary after a failover).
	lines := []string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"dir " + dir,
		"logfile " + filepath.Join(dir, "sentinel.log"),
		"requirepass " + g.SentinelPassword,
		"sentinel sentinel-pass " + g.SentinelPassword,
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 2", g.Master, primaryPort),
		fmt.Sprintf("sentinel auth-pass %s %s", g.Master, g.Password),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", g.Master, SentinelDownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", g.Master, SentinelFailoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", g.Master),
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start redis-server --sentinel: %v", err)
	}
	s := &sentinelProc{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitTCP(t, s.addr, 10*time.Second)
	return s
}

// SentinelAddrs are the sentinels' host:port, as REDIS_SENTINEL_ADDRS takes
// them.
func (g *SentinelGroup) SentinelAddrs() []string {
	out := make([]string, len(g.sentinels))
	for i, s := range g.sentinels {
		out[i] = s.addr
	}
	return out
}

// Settings are the redisconn settings for logical database db through the
// sentinels. REDIS_URL's host is a name nothing listens on: the clients
// must learn the primary's address from the sentinels.
func (g *SentinelGroup) Settings(db int) redisconn.Settings {
	return redisconn.Settings{
		URL:              fmt.Sprintf("redis://:%s@primary.invalid:6379/%d", g.Password, db),
		SentinelAddrs:    g.SentinelAddrs(),
		SentinelMaster:   g.Master,
		SentinelPassword: g.SentinelPassword,
	}
}

// Env is Settings as the programs' environment variables.
func (g *SentinelGroup) Env(db int) map[string]string {
	s := g.Settings(db)
	return map[string]string{
		"REDIS_URL":               s.URL,
		"REDIS_SENTINEL_ADDRS":    strings.Join(s.SentinelAddrs, ","),
		"REDIS_SENTINEL_MASTER":   s.SentinelMaster,
		"REDIS_SENTINEL_PASSWORD": s.SentinelPassword,
	}
}

// Primary is the address every sentinel names as the primary, or an error
// while they disagree or cannot be asked.
func (g *SentinelGroup) Primary(ctx context.Context) (string, error) {
	var addr string
	for _, s := range g.sentinels {
		hp, err := g.sentinelClient(s.addr).GetMasterAddrByName(ctx, g.Master).Result()
		if err != nil {
			return "", fmt.Errorf("sentinel %s: %w", s.addr, err)
		}
		a := strings.Join(hp, ":")
		if addr != "" && a != addr {
			return "", fmt.Errorf("sentinels disagree: %s and %s", addr, a)
		}
		addr = a
	}
	return addr, nil
}

// Server is the data server listening on addr.
func (g *SentinelGroup) Server(addr string) *RedisServer {
	for _, s := range g.Servers {
		if s.Addr == addr {
			return s
		}
	}
	g.t.Fatalf("testenv: no server of the group listens on %s", addr)
	return nil
}

// KillPrimary SIGKILLs the server the sentinels name as the primary and
// returns its address.
func (g *SentinelGroup) KillPrimary() string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := g.Primary(ctx)
	if err != nil {
		g.t.Fatalf("testenv: primary before the kill: %v", err)
	}
	g.Server(addr).Stop() // SIGKILL
	return addr
}

// WaitFailover waits until every sentinel names a primary other than old
// and that server says it is a master, and returns the new primary's
// address.
func (g *SentinelGroup) WaitFailover(old string, within time.Duration) string {
	g.t.Helper()
	var now string
	g.waitFor("the sentinels to promote the replica", within, func(ctx context.Context) (bool, string) {
		a, err := g.Primary(ctx)
		if err != nil || a == old {
			return false, fmt.Sprintf("primary %s (%v)", a, err)
		}
		role, err := g.dataClient(a).Do(ctx, "ROLE").Slice()
		if err != nil || len(role) == 0 || role[0] != "master" {
			return false, fmt.Sprintf("%s: ROLE %v (%v)", a, role, err)
		}
		now = a
		return true, ""
	})
	return now
}

// Signal sends sig to the data server at addr: SIGSTOP and SIGCONT freeze
// and thaw a replica, so that writes the primary acknowledges never reach
// it, as when asynchronous replication lags at the moment of a crash.
func (g *SentinelGroup) Signal(addr string, sig syscall.Signal) {
	g.t.Helper()
	s := g.Server(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		g.t.Fatalf("testenv: %s is not running", addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		g.t.Fatalf("testenv: signal %s: %v", addr, err)
	}
}

// ReplOffset is the replication offset of the data server at addr: on a
// primary, how far its stream of writes goes; on a replica, how much of it
// the replica has applied. A replica whose offset is below the primary's
// at the moment the primary dies has lost that tail.
func (g *SentinelGroup) ReplOffset(ctx context.Context, addr string) (int64, error) {
	info, err := g.dataClient(addr).Info(ctx, "replication").Result()
	if err != nil {
		return 0, fmt.Errorf("testenv: INFO replication of %s: %w", addr, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_repl_offset:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("testenv: %s: master_repl_offset %q: %w", addr, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("testenv: %s: no master_repl_offset in INFO replication", addr)
}

// DataClient is a client of the data server at addr itself (not through
// the sentinels), database db, closed when the test ends.
func (g *SentinelGroup) DataClient(addr string, db int) *redis.Client {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := addr + "/" + strconv.Itoa(db)
	if c := g.clients[k]; c != nil {
		return c
	}
	c := redis.NewClient(&redis.Options{Addr: addr, Password: g.Password, DB: db, MaxRetries: -1})
	g.clients[k] = c
	return c
}

func (g *SentinelGroup) dataClient(addr string) *redis.Client { return g.DataClient(addr, 0) }

func (g *SentinelGroup) sentinelClient(addr string) *redis.SentinelClient {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.sclient[addr]; c != nil {
		return c
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: g.SentinelPassword, MaxRetries: -1})
	g.sclient[addr] = c
	return c
}

// waitFor polls cond with a context for each try, so that a server that
// does not answer costs one try, not the whole wait.
func (g *SentinelGroup) waitFor(what string, within time.Duration, cond func(context.Context) (bool, string)) {
	g.t.Helper()
	err := Poll(within, 50*time.Millisecond, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return cond(ctx)
	})
	if err != nil {
		g.t.Fatalf("testenv: %s: %v", what, err)
	}
}

func splitAddr(addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}
