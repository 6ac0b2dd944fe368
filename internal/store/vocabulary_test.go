package store_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"wasessions/internal/store"
)

// The vocabulary is a public contract: docs/openapi.yaml and the
// database's CHECK constraints must list exactly the constants, so a reason
// added in code without the document (or the other way round) fails here.
func TestVocabularyMatchesOpenAPI(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	enum := func(schema string) []string {
		ref := doc.Components.Schemas[schema]
		if ref == nil || ref.Value == nil {
			t.Fatalf("docs/openapi.yaml has no schema %s", schema)
		}
		var out []string
		for _, v := range ref.Value.Enum {
			out = append(out, v.(string))
		}
		return out
	}
	eventStatus := doc.Components.Schemas["SessionEvent"].Value.Properties["status"].Value.Enum
	var eventStatuses []string
	for _, v := range eventStatus {
		eventStatuses = append(eventStatuses, v.(string))
	}
	for _, tc := range []struct {
		name      string
		doc, code []string
	}{
		{"StatusReason", enum("StatusReason"), strs(store.Reasons())},
		{"Status", enum("Status"), strs(store.Statuses())},
		{"DesiredState", enum("DesiredState"), strs(store.DesiredStates())},
		{"ErrorCode", enum("ErrorCode"), strs(store.ErrorCodes())},
		{"SessionEvent.status", eventStatuses, append(strs(store.Statuses()), string(store.StatusNone))},
		{"MessageStatus", enum("MessageStatus"), store.MessageStatuses()},
		{"MessageReason", enum("MessageReason"), store.MessageReasons()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, c := slices.Sorted(slices.Values(tc.doc)), slices.Sorted(slices.Values(tc.code))
			if !slices.Equal(d, c) {
				t.Errorf("docs/openapi.yaml lists %v\ninternal/store/vocabulary.go has %v", d, c)
			}
		})
	}
}

func TestVocabularyMatchesSchema(t *testing.T) {
	b, err := os.ReadFile("../../migrations/00001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		column string
		code   []string
	}{
		{"status", strs(store.Statuses())},
		{"desired_state", strs(store.DesiredStates())},
	} {
		m := regexp.MustCompile(`CHECK \(` + tc.column + ` IN \(([^)]*)\)\)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no CHECK constraint on %s in the migration", tc.column)
		}
		var inSQL []string
		for _, v := range strings.Split(string(m[1]), ",") {
			inSQL = append(inSQL, strings.Trim(strings.TrimSpace(v), "'"))
		}
		if !slices.Equal(slices.Sorted(slices.Values(inSQL)), slices.Sorted(slices.Values(tc.code))) {
			t.Errorf("%s: the migration allows %v, the code has %v", tc.column, inSQL, tc.code)
		}
	}
}

func TestMessageVocabularyMatchesSchema(t *testing.T) {
	b, err := os.ReadFile("../../migrations/00017_messages.sql")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CHECK \(status IN \(([^)]*)\)\)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no CHECK constraint on messages.status in the migration")
	}
	var inSQL []string
	for _, v := range strings.Split(string(m[1]), ",") {
		inSQL = append(inSQL, strings.Trim(strings.TrimSpace(v), "'"))
	}
	if !slices.Equal(slices.Sorted(slices.Values(inSQL)), slices.Sorted(slices.Values(store.MessageStatuses()))) {
		t.Errorf("the migration allows %v, the code has %v", inSQL, store.MessageStatuses())
	}
}

// Every reason that ends a session ends it in a final status, and the
// reasons that do not end one are refused by End's guard.
func TestReasonEndStatus(t *testing.T) {
	for _, tc := range []struct {
		reason store.Reason
		want   store.Status
	}{
		{store.ReasonUserDisconnected, store.StatusDisconnected},
		{store.ReasonSessionExpired, store.StatusExpired},
		{store.ReasonQRTimeout, store.StatusExpired},
		{store.ReasonPhoneUnlinked, store.StatusLoggedOut},
		{store.ReasonDeviceKeysMissing, store.StatusLoggedOut},
		{store.ReasonStreamReplaced, store.StatusFailed},
		{store.ReasonConnectFailed, store.StatusFailed},
		{store.ReasonQRCode, ""},
		{store.ReasonWorkerShutdown, ""},
		{store.Reason("made_up"), ""},
	} {
		got, ok := tc.reason.EndStatus()
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s.EndStatus() = %q, %v; want %q", tc.reason, got, ok, tc.want)
		}
		if ok && got.Live() {
			t.Errorf("%s ends in the live status %s", tc.reason, got)
		}
	}
	for _, r := range store.Reasons() {
		if s, ok := r.EndStatus(); ok && s.Live() {
			t.Errorf("%s ends in the live status %s", r, s)
		}
	}
}

func TestGoneReason(t *testing.T) {
	for _, tc := range []struct {
		task, row, want store.Reason
	}{
		{"", "", store.ReasonUserDisconnected},
		{store.ReasonUserDisconnected, store.ReasonConnectionLost, store.ReasonUserDisconnected},
		{store.ReasonSessionExpired, "", store.ReasonSessionExpired},
		{"reconcile", store.ReasonSessionExpired, store.ReasonSessionExpired},
	} {
		if got := store.GoneReason(tc.task, tc.row); got != tc.want {
			t.Errorf("GoneReason(%q, %q) = %q, want %q", tc.task, tc.row, got, tc.want)
		}
	}
}

func strs[T ~string](in []T) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = string(v)
	}
	return out
}

// Every code has a sentence, and a value that is not a code (raw text
// stored before codes existed) is shown as unknown, never as itself.
func TestErrorCodeMessage(t *testing.T) {
	for _, c := range store.ErrorCodes() {
		if m := c.Message(); m == "" || (c != store.ErrUnknown && m == store.ErrUnknown.Message()) {
			t.Errorf("%s has no sentence of its own", c)
		}
	}
	raw := store.ErrorCode("dial tcp 10.0.0.1:443: connect: connection refused")
	if raw.Known() != store.ErrUnknown || raw.Message() != store.ErrUnknown.Message() {
		t.Errorf("raw text shown as %q / %q", raw.Known(), raw.Message())
	}
}
