package testenv

import (
	"fmt"
	"time"
)

// Poll asks cond every every until it holds, and returns an error carrying
// cond's last description once within has passed. It is the one polling
// loop of the tests: testfactory.Eventually and testfactory.WaitFor put a
// test around it; it lives here, below testfactory, because testenv's own
// waits (a server accepting connections, sentinels agreeing) need it and
// testenv cannot import testfactory (the store's and tasks' own tests
// import testenv, and testfactory imports those packages).
func Poll(within, every time.Duration, cond func() (ok bool, last string)) error {
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if last == "" {
				return fmt.Errorf("not within %s", within)
			}
			return fmt.Errorf("not within %s; last: %s", within, last)
		}
		time.Sleep(every)
	}
}
