package testfactory

import (
	"testing"

	"wasessions/tasks"
)

// WorkerQueue is tasks.WorkerQueue for a test's fixed, non-empty worker id.
func WorkerQueue(t testing.TB, workerID string) string {
	t.Helper()
	q, err := tasks.WorkerQueue(workerID)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
