//go:build outages

package worker_test

import (
	"testing"
	"time"
)

// The longer outages of issue 9 (make test-outages): 20 s and 60 s of a
// Postgres that refuses connections, and 60 s of one that hangs.
func TestPostgresOutagesLong(t *testing.T) {
	for _, tt := range []struct {
		fault string
		d     time.Duration
	}{{"down", 20 * time.Second}, {"down", 60 * time.Second}, {"hang", 60 * time.Second}} {
		t.Run(tt.fault+"-"+tt.d.String(), func(t *testing.T) {
			t.Parallel()
			outageRun(t, tt.fault, tt.d)
		})
	}
}

// The same lengths for Redis (see redisOutageRun): 20 s and 60 s refused,
// 20 s and 60 s hanging.
func TestRedisOutagesLong(t *testing.T) {
	for _, tt := range []struct {
		fault string
		d     time.Duration
	}{{"down", 20 * time.Second}, {"down", 60 * time.Second}, {"hang", 20 * time.Second}, {"hang", 60 * time.Second}} {
		t.Run(tt.fault+"-"+tt.d.String(), func(t *testing.T) {
			t.Parallel()
			redisOutageRun(t, tt.fault, tt.d)
		})
	}
}
