package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/docs"
	"wasessions/internal/auth"
	"wasessions/internal/events"
	"wasessions/internal/httpapi"
	"wasessions/internal/queue"
	"wasessions/internal/ratelimit"
	"wasessions/internal/redisconn"
	"wasessions/internal/store"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
)

const (
	testSecret   = "test-secret-0123456789abcdef0123456789"
	testIssuer   = "wasessions-test"
	testAudience = "wasessions-api"
)

// env is one API on its own database and Redis database, with what a test
// needs to act as the worker (store, bus) and to look into the queue.
type env struct {
	t         testing.TB
	app       *fiber.App
	store     *store.Store
	rdb       redis.UniversalClient
	bus       *events.Bus
	enq       *queue.Enqueuer
	inspector *asynq.Inspector
	signer    *auth.Signer
	logs      *testfactory.LogBuffer
	// deps and opts are what app was built with.
	deps httpapi.Deps
	opts httpapi.Options
}

// setup customises an env before the app is built.
type setup struct {
	opts      httpapi.Options
	deps      httpapi.Deps
	redisURL  string       // default: a reserved logical DB on the test Redis
	st        *store.Store // default: a fresh migrated database
	nilStore  bool
	noMonitor bool
	hub       events.HubOptions // the caps of the app's event hub
	// log, when set, is the app's logger instead of one collecting every
	// line in memory for assertions (e.logs stays empty then).
	log *slog.Logger
}

func newEnv(t testing.TB, configure ...func(*setup)) *env {
	t.Helper()
	s := &setup{opts: httpapi.Options{QRWait: 0, Heartbeat: 50 * time.Millisecond, CleanupWaitHosted: time.Second}}
	for _, f := range configure {
		f(s)
	}
	if s.st == nil && !s.nilStore {
		s.st, _ = testenv.NewStore(t)
	}
	if s.redisURL == "" {
		s.redisURL = testenv.NewRedisDB(t).URL()
	}
	rdb, err := redisconn.Open(s.redisURL, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	verifier, err := auth.NewVerifier(auth.Config{Secret: []byte(testSecret), Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewSigner(auth.Config{Secret: []byte(testSecret), Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testfactory.LogBuffer{}
	e := &env{t: t, store: s.st, rdb: rdb, bus: events.NewBus(rdb), enq: queue.New(rdb), signer: signer, logs: logs}
	e.inspector = e.enq.Inspector()
	d := s.deps
	d.Store, d.Enqueuer, d.Bus, d.Redis, d.Verifier = s.st, e.enq, e.bus, rdb, verifier
	if s.opts.Limits != (httpapi.Limits{}) {
		d.Limiter = ratelimit.New(rdb) // on this env's own client, as each replica has one
	}
	d.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if s.log != nil {
		d.Log = s.log
	}
	s.hub.Log = d.Log
	d.Hub = events.NewHub(e.bus, s.hub)
	t.Cleanup(d.Hub.Close)
	if s.opts.MonitorPassword != "" && !s.noMonitor {
		ropts, err := redisconn.Options(s.redisURL, "")
		if err != nil {
			t.Fatal(err)
		}
		mon := httpapi.NewMonitor(redisconn.AsynqConnOpt(ropts), s.opts.MonitorWritable)
		t.Cleanup(func() { mon.Close() })
		d.Monitor = mon
	}
	if d.Metrics == nil {
		d.Metrics = httpapi.NewMetrics(d) // shared with any other app the test builds
	}
	e.deps, e.opts = d, s.opts
	e.app = httpapi.New(d, s.opts)
	return e
}

func newUser() string { return uuid.NewString() }

func (e *env) token(userID string, admin bool) string {
	e.t.Helper()
	tok, err := e.signer.Sign(userID, admin, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// response is an answered request, already checked against the contract.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// envelopeJSON is the envelope as the tests read it.
type envelopeJSON struct {
	Success bool            `json:"success"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
	Error   *struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

func (r response) envelope(t testing.TB) envelopeJSON {
	t.Helper()
	var env envelopeJSON
	if err := json.Unmarshal(r.Body, &env); err != nil {
		t.Fatalf("body is not an envelope: %v\n%s", err, r.Body)
	}
	return env
}

// data decodes the success envelope's data into v.
func (r response) data(t testing.TB, v any) {
	t.Helper()
	env := r.envelope(t)
	if !env.Success || env.Error != nil {
		t.Fatalf("not a success envelope: %s", r.Body)
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		t.Fatalf("data: %v\n%s", err, r.Body)
	}
}

// errCode asserts an error envelope with this status and returns its code.
func (r response) wantError(t testing.TB, status int, code string) envelopeJSON {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	env := r.envelope(t)
	if env.Success || env.Error == nil {
		t.Fatalf("not an error envelope: %s", r.Body)
	}
	if env.Error.Code != code {
		t.Fatalf("error code = %q, want %q (%s)", env.Error.Code, code, env.Error.Message)
	}
	return env
}

type req struct {
	method, path string
	token        string // "" = no Authorization header
	header       map[string]string
	body         []byte
}

// do sends r through the app (app.Test, no network) and validates the
// response against docs/openapi.yaml.
func (e *env) do(r req) response {
	e.t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, "http://localhost"+r.path, body)
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.body != nil && r.header["Content-Type"] == "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := e.app.Test(hr, 30_000)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Body: b}
	checkContract(e.t, r.method, r.path, out)
	return out
}

var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRouter routers.Router
	specErr    error
)

func spec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		specDoc, specErr = loader.LoadFromData(docs.OpenAPI)
		if specErr != nil {
			return
		}
		if specErr = specDoc.Validate(loader.Context); specErr != nil {
			return
		}
		specRouter, specErr = gorillamux.NewRouter(specDoc)
	})
	if specErr != nil {
		t.Fatalf("docs/openapi.yaml: %v", specErr)
	}
	return specDoc, specRouter
}

// checkContract fails the test unless the response is what
// docs/openapi.yaml says this route answers: a documented status, its
// content type, a body matching its schema, its required headers. A path
// the contract does not have must answer 404 or 405 with the error
// envelope.
func checkContract(t testing.TB, method, path string, r response) {
	t.Helper()
	doc, router := spec(t)
	// OpenAPI path parameters span one segment; asynqmon's paths below
	// /monitor/ are any depth, described by /monitor/{path}.
	lookup := path
	if strings.HasPrefix(path, "/monitor/") {
		lookup = "/monitor/x"
	}
	hr := httptest.NewRequest(method, "http://localhost"+lookup, nil)
	route, params, err := router.FindRoute(hr)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		if r.Status != http.StatusNotFound && r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("contract: %s %s is not in the contract but answered %d", method, path, r.Status)
		}
		checkSchema(t, doc, "ErrorEnvelope", r)
		return
	}
	if err != nil {
		t.Fatalf("contract: find route %s %s: %v", method, path, err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: hr, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  r.Status,
		Header:  r.Header,
		Body:    io.NopCloser(bytes.NewReader(r.Body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("contract: %s %s answered %d against docs/openapi.yaml: %v\nbody: %.2000s", method, path, r.Status, err, r.Body)
	}
}

// checkSchema validates a JSON body against a named component schema.
func checkSchema(t testing.TB, doc *openapi3.T, name string, r response) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("contract: content type %q, want application/json; body %s", ct, r.Body)
	}
	checkJSON(t, doc, name, r.Body)
}

func checkJSON(t testing.TB, doc *openapi3.T, name string, body []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("contract: body is not JSON: %v\n%s", err, body)
	}
	ref := doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		t.Fatalf("contract: no schema %s", name)
	}
	if err := ref.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()); err != nil {
		t.Fatalf("contract: body does not match %s: %v\n%s", name, err, body)
	}
}

// createTasks lists the session:create tasks waiting in the shared queue.
func (e *env) pendingTasks(queueName string) []*asynq.TaskInfo {
	e.t.Helper()
	list, err := e.inspector.ListPendingTasks(queueName)
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		e.t.Fatal(err)
	}
	return list
}

// taskOf rebuilds a task from its info, to parse its payload.
func taskOf(ti *asynq.TaskInfo) *asynq.Task { return asynq.NewTask(ti.Type, ti.Payload) }

// serve runs the app on a real loopback listener (app.Test buffers
// streams and reports fasthttp's own errors, such as a body over the
// limit, as failures) and returns its base URL. The server stops when the
// test ends.
func (e *env) serve() string {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.app.Listener(ln)
	}()
	e.t.Cleanup(func() {
		_ = e.app.ShutdownWithTimeout(5 * time.Second)
		<-done
	})
	return "http://" + ln.Addr().String()
}

// doHTTP sends r over the network to base and validates the response
// against the contract, like do.
func (e *env) doHTTP(base string, r req) response {
	e.t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Body: b}
	checkContract(e.t, r.method, r.path, out)
	return out
}

func readAll(t testing.TB, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oversized sends a POST announcing a body one byte over the limit and
// reads the answer without sending the body: the server answers from the
// header and closes the connection, so a client still writing the body
// could see a reset instead of the answer.
func (e *env) oversized(base, path, token string) response {
	e.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	head := "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(httpapi.BodyLimit+1) + "\r\n\r\n"
	if _, err := conn.Write([]byte(head)); err != nil {
		e.t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Body: []byte(readAll(e.t, res))}
	checkContract(e.t, "POST", path, out)
	return out
}
