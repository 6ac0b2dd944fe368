package store

// AdminListQuery exposes the admin list's SQL to the tests that check its
// plan (EXPLAIN) at scale.
var AdminListQuery = adminListQuery
