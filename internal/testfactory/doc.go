// Package testfactory makes the things tests need, in the manner of River's
// testfactory: values built from the service's own constructors, with a
// test's fixed inputs, failing the test (never returning an error) when
// they cannot be made. It is imported by tests only.
package testfactory
