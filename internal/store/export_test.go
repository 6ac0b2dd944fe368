package store

// AdminListQuery exposes the admin list's SQL to the tests that check its
// plan (EXPLAIN) at scale.
var AdminListQuery = adminListQuery

// CurrentQueries are the statements that read a user's current session
// (CurrentSession, CurrentStatus), for the test that checks their plans,
// with the index each must read.
var CurrentQueries = map[string]struct{ SQL, Index string }{
	"CurrentSession":       {currentSessionQuery, "idx_whatsapp_sessions_current"},
	"CurrentStatus":        {currentStatusQuery, "idx_whatsapp_sessions_current"},
	"CurrentStatus (live)": {liveStatusQuery, "uq_whatsapp_sessions_live_user"},
}
