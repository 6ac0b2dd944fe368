package store_test

import (
	"encoding/json"
	"strings"
	"testing"

	"wasessions/internal/store"
)

// seedAdmin fills the table with n sessions of n users, spread like a busy
// deployment: 60% connected, 10% reconnecting, 10% qr, 20% ended; live
// ones on one of ten workers; created over 30 days. The status history
// trigger is off while seeding: the list never reads the history, and it
// would double the seed's time.
func (f *fx) seedAdmin(n int) {
	f.t.Helper()
	f.exec(`ALTER TABLE whatsapp_sessions DISABLE TRIGGER trg_whatsapp_sessions_status_history`)
	defer f.exec(`ALTER TABLE whatsapp_sessions ENABLE TRIGGER trg_whatsapp_sessions_status_history`)
	f.exec(`INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, $1)`, n)
	f.exec(`INSERT INTO whatsapp_sessions (user_id, session_id, status, status_reason, worker_id, lease_until, expires_at, created_at)
		SELECT id, 'whatsapp_' || id || '_1', st,
			CASE st WHEN 'failed' THEN 'connect_failed' WHEN 'connected' THEN 'restored' ELSE NULL END,
			CASE WHEN st IN ('connected','reconnecting','qr') THEN 'worker-' || (k / 10 % 10) END,
			CASE WHEN st IN ('connected','reconnecting','qr') THEN now() + interval '30 seconds' END,
			now() + interval '1 day',
			now() - (k % 2592000) * interval '1 second'
		FROM (SELECT id, k, CASE
				WHEN k % 10 < 6 THEN 'connected' WHEN k % 10 = 6 THEN 'reconnecting'
				WHEN k % 10 = 7 THEN 'qr' WHEN k % 10 = 8 THEN 'failed' ELSE 'expired' END AS st
			FROM (SELECT id, (random() * 1e9)::bigint AS k FROM users) r) s`)
	f.exec(`ANALYZE whatsapp_sessions`)
}

// adminShapes are the list's query shapes an operator uses.
func adminShapes(f *fx) map[string]store.AdminFilter {
	var user string
	var after store.Cursor
	if err := f.st.Pool().QueryRow(f.ctx, `SELECT user_id::text, created_at, id::text FROM whatsapp_sessions
		ORDER BY created_at DESC, id DESC OFFSET 5000 LIMIT 1`).Scan(&user, &after.CreatedAt, &after.ID); err != nil {
		f.t.Fatal(err)
	}
	return map[string]store.AdminFilter{
		"all":                    {Limit: 50},
		"all_page_100":           {Limit: 50, After: &after},
		"status_failed":          {Status: store.StatusFailed, Limit: 50},
		"status_failed_page_100": {Status: store.StatusFailed, Limit: 50, After: &after},
		"worker":                 {WorkerID: "worker-3", Limit: 50},
		"worker_and_status":      {WorkerID: "worker-3", Status: store.StatusReconnecting, Limit: 50},
		"user":                   {UserID: user, Limit: 50},
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON) the checks read.
type planNode struct {
	NodeType  string     `json:"Node Type"`
	IndexName string     `json:"Index Name"`
	Plans     []planNode `json:"Plans"`
}

func (p planNode) walk(visit func(planNode)) {
	visit(p)
	for _, c := range p.Plans {
		c.walk(visit)
	}
}

// explain runs EXPLAIN ANALYZE on the list query for filter and returns
// its plan and execution time.
func (f *fx) explain(filter store.AdminFilter) (planNode, float64) {
	f.t.Helper()
	q, args := store.AdminListQuery(filter)
	var raw []byte
	if err := f.st.Pool().QueryRow(f.ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+q, args...).Scan(&raw); err != nil {
		f.t.Fatalf("explain: %v", err)
	}
	var out []struct {
		Plan          planNode `json:"Plan"`
		ExecutionTime float64  `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		f.t.Fatalf("explain output: %v %s", err, raw)
	}
	return out[0].Plan, out[0].ExecutionTime
}

// TestAdminListUsesAnIndex: every shape of the admin list reads an index,
// never the whole table, and (but for shapes that select few rows) never
// sorts,
// so a page costs the same however big the table. 20,000 sessions keep it
// quick in make test; BenchmarkAdminList measures the same plans at
// 100,000 (docs/BENCHMARKS.md).
func TestAdminListUsesAnIndex(t *testing.T) {
	t.Parallel()
	f := newFx(t)
	f.seedAdmin(20_000)
	for name, filter := range adminShapes(f) {
		plan, ms := f.explain(filter)
		var nodes, indexes []string
		plan.walk(func(p planNode) {
			nodes = append(nodes, p.NodeType)
			if p.IndexName != "" {
				indexes = append(indexes, p.IndexName)
			}
		})
		joined := strings.Join(nodes, " > ")
		if strings.Contains(joined, "Seq Scan") || len(indexes) == 0 {
			t.Errorf("%s: plan reads the table without an index: %s", name, joined)
		}
		// A user's sessions, and one worker's in one status, are few:
		// sorting them is allowed; the other shapes must read in order.
		if name != "user" && name != "worker_and_status" && strings.Contains(joined, "Sort") {
			t.Errorf("%s: plan sorts: %s", name, joined)
		}
		t.Logf("%-24s %7.3f ms  %s via %s", name, ms, joined, strings.Join(indexes, ", "))
	}
}

// BenchmarkAdminList is one page (50 rows) of the admin list at 100,000
// sessions, per query shape; with -v it also logs each shape's EXPLAIN
// ANALYZE execution time and the index it used.
func BenchmarkAdminList(b *testing.B) {
	f := newFx(b)
	f.seedAdmin(100_000)
	for name, filter := range adminShapes(f) {
		plan, ms := f.explain(filter)
		var indexes []string
		plan.walk(func(p planNode) {
			if p.IndexName != "" {
				indexes = append(indexes, p.IndexName)
			}
		})
		b.Logf("EXPLAIN ANALYZE %-24s %7.3f ms via %s", name, ms, strings.Join(indexes, ", "))
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := f.st.AdminList(f.ctx, filter); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
