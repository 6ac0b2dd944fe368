package worker

// SetBeforeRenew makes the heartbeat call f after it took its snapshot of
// hosted sessions and before it sends the renewal (see hooks).
func SetBeforeRenew(w *Worker, f func()) { w.hooks.beforeRenew = f }
