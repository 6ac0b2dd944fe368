package waemu

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxControlBody bounds control request bodies.
const maxControlBody = 64 << 10

// routes is the control API: JSON in, JSON out, errors as
// {"error": "reason"} with a 4xx (or 5xx) status.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pubkey", s.handlePubKey)
	mux.HandleFunc("POST /phone/scan", s.handleScan)
	mux.HandleFunc("POST /phone/code", s.handleCode)
	mux.HandleFunc("GET /devices", s.handleDevices)
	mux.HandleFunc("GET /devices/{jid}", s.handleDevice)
	mux.HandleFunc("POST /devices/{jid}/unlink", s.handleUnlink)
	mux.HandleFunc("POST /devices/{jid}/drop", s.handleDrop)
	mux.HandleFunc("GET /stats", s.handleStats)
	mux.HandleFunc("POST /refuse-logins", s.handleRefuseLogins)
	s.messageRoutes(mux)
	s.refusalRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{"no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

type errorBody struct {
	Error string `json:"error"`
}

type jidBody struct {
	JID string `json:"jid"`
}

// phoneRequest is the body of POST /phone/scan and /phone/code.
type phoneRequest struct {
	QR    string `json:"qr"`
	Code  string `json:"code"`
	Phone string `json:"phone"`
	Name  string `json:"name"`
}

func (s *Server) handlePubKey(w http.ResponseWriter, r *http.Request) {
	pub := s.PubKey()
	writeJSON(w, http.StatusOK, map[string]string{"pubkey": hex.EncodeToString(pub[:])})
}

func (s *Server) handleScan(w http.ResponseWriter, r *http.Request) {
	var req phoneRequest
	if !readJSON(w, r, &req) || !require(w, req.QR != "", "qr is required") {
		return
	}
	jid, err := s.Scan(r.Context(), req.QR, req.Phone, req.Name)
	answer(w, http.StatusOK, jidBody{jid}, err)
}

func (s *Server) handleCode(w http.ResponseWriter, r *http.Request) {
	var req phoneRequest
	if !readJSON(w, r, &req) {
		return
	}
	jid, err := s.PairCode(r.Context(), req.Code, req.Phone, req.Name)
	answer(w, http.StatusOK, jidBody{jid}, err)
}

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Devices())
}

func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.Device(r.PathValue("jid"))
	answer(w, http.StatusOK, d, err)
}

func (s *Server) handleUnlink(w http.ResponseWriter, r *http.Request) {
	err := s.Unlink(r.PathValue("jid"))
	answer(w, http.StatusOK, map[string]any{"jid": r.PathValue("jid"), "unlinked": true}, err)
}

func (s *Server) handleDrop(w http.ResponseWriter, r *http.Request) {
	dropped, err := s.Drop(r.PathValue("jid"))
	answer(w, http.StatusOK, map[string]any{"jid": r.PathValue("jid"), "dropped": dropped}, err)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleRefuseLogins(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Seconds *float64 `json:"seconds"`
	}
	if !readJSON(w, r, &req) || !require(w, req.Seconds != nil && *req.Seconds >= 0, "seconds (>= 0) is required") {
		return
	}
	d := time.Duration(*req.Seconds * float64(time.Second))
	s.RefuseLogins(d)
	writeJSON(w, http.StatusOK, map[string]any{"refusing": d > 0, "seconds": *req.Seconds})
}

// readJSON decodes the body into v, answering 400 itself when it cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxControlBody))
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("bad JSON body: %v", err)})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// answer is how a control endpoint ends: err as its status (statusOf) and
// message, or v with status.
func answer(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, status, v)
}

// require answers 400 with msg unless ok (a field the endpoint needs).
func require(w http.ResponseWriter, ok bool, msg string) bool {
	if !ok {
		writeJSON(w, http.StatusBadRequest, errorBody{msg})
	}
	return ok
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), errorBody{err.Error()})
}

// statusOf maps the emulator's errors to HTTP statuses.
func statusOf(err error) int {
	if st := messageStatus(err); st != 0 {
		return st
	}
	switch {
	case errors.Is(err, ErrMalformedQR), errors.Is(err, ErrMalformedCode), errors.Is(err, ErrBadPhone):
		return http.StatusBadRequest
	case errors.Is(err, ErrWrongCode):
		return http.StatusForbidden
	case errors.Is(err, ErrUnknownQR), errors.Is(err, ErrUnknownCode), errors.Is(err, ErrUnknownDevice):
		return http.StatusNotFound
	case errors.Is(err, ErrQRUsed), errors.Is(err, ErrAmbiguousCode):
		return http.StatusConflict
	case errors.Is(err, ErrQRExpired), errors.Is(err, ErrClientGone):
		return http.StatusGone
	case errors.Is(err, ErrClientTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrPairRejected):
		return http.StatusBadGateway
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
