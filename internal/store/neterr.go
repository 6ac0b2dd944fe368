package store

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// undefinedTable is Postgres' SQLSTATE for a missing table.
const undefinedTable = "42P01"

// IsSchemaMissing reports whether err is Postgres saying a table does not
// exist (undefined_table): the database has not been migrated yet.
func IsSchemaMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == undefinedTable
}

// isNetErr recognises the errors a dropped or refused connection surfaces as.
func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
