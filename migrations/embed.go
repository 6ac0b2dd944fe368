// Package migrations holds the service's SQL schema as goose migrations,
// embedded so every binary carries the schema it was built for.
package migrations

import "embed"

// FS holds the *.sql migrations, applied in file-name order by
// internal/migrate.
//
//go:embed *.sql
var FS embed.FS
