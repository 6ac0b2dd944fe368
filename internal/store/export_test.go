package store

// AdminListQuery exposes the admin list's SQL to the tests that check its
// plan (EXPLAIN) at scale.
var AdminListQuery = adminListQuery

// CurrentQueries are the statements that read a user's current session
// (CurrentSession, CurrentStatus), for the test that checks their plans.
var CurrentQueries = map[string]string{"CurrentSession": currentSessionQuery, "CurrentStatus": currentStatusQuery}
