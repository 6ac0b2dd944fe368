package waemu

import (
	"errors"
	"net/http"
)

// messageRoutes adds the peer phone and message endpoints to the control
// API (see Server.Handler).
func (s *Server) messageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /peers", s.handleAddPeer)
	mux.HandleFunc("GET /peers", s.handlePeers)
	mux.HandleFunc("GET /peers/{jid}/inbox", s.handleInbox)
	mux.HandleFunc("POST /peers/{jid}/send", s.handleSend)
	mux.HandleFunc("POST /peers/{jid}/read", s.handleRead)
	mux.HandleFunc("GET /messages/{id}", s.handleGetMessage)
	mux.HandleFunc("POST /phone/history", s.handleHistory)
	mux.HandleFunc("GET /faults", s.handleFaults)
	mux.HandleFunc("POST /faults", s.handleSetFault)
	mux.HandleFunc("DELETE /faults", s.handleClearFaults)
}

func (s *Server) handleAddPeer(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Phone string `json:"phone"`
		Name  string `json:"name"`
	}
	if !readJSON(w, r, &req) || !require(w, req.Phone != "", "phone is required") {
		return
	}
	p, err := s.AddPeer(req.Phone, req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if p.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, p)
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"peers": nonNil(s.Peers())})
}

func (s *Server) handleInbox(w http.ResponseWriter, r *http.Request) {
	msgs, err := s.Inbox(r.PathValue("jid"))
	answer(w, http.StatusOK, map[string]any{"messages": msgs}, err)
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	var req struct {
		To   string `json:"to"`
		Text string `json:"text"`
		ID   string `json:"id"`
	}
	if !readJSON(w, r, &req) || !require(w, req.To != "" && req.Text != "", "to and text are required") {
		return
	}
	id, err := s.SendText(r.Context(), r.PathValue("jid"), req.To, req.Text, req.ID)
	answer(w, http.StatusOK, map[string]string{"id": id}, err)
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Account string        `json:"account"`
		Chats   []HistoryChat `json:"chats"`
	}
	if !readJSON(w, r, &req) || !require(w, req.Account != "" && len(req.Chats) > 0, "account and chats are required") {
		return
	}
	id, chats, err := s.SendHistorySync(r.Context(), req.Account, req.Chats)
	answer(w, http.StatusOK, map[string]any{"id": id, "chats": chats}, err)
}

func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	var req struct {
		IDs []string `json:"ids"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	n, err := s.MarkRead(r.PathValue("jid"), req.IDs)
	answer(w, http.StatusOK, map[string]int{"read": n}, err)
}

func (s *Server) handleGetMessage(w http.ResponseWriter, r *http.Request) {
	msg, err := s.Message(r.PathValue("id"))
	answer(w, http.StatusOK, msg, err)
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"faults": s.Faults()})
}

func (s *Server) handleSetFault(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Fault   string  `json:"fault"`
		Device  string  `json:"device"`
		Count   int     `json:"count"`
		Code    int     `json:"code"`
		Seconds float64 `json:"seconds"`
		Phone   string  `json:"phone"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	f, err := s.SetFault(Fault{Kind: req.Fault, Device: req.Device, Remaining: req.Count, Code: req.Code,
		Seconds: req.Seconds, Phone: req.Phone})
	answer(w, http.StatusCreated, f, err)
}

func (s *Server) handleClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearFaults()
	writeJSON(w, http.StatusOK, map[string]any{"faults": []Fault{}})
}

// messageStatus maps the message operations' errors to HTTP statuses; it
// returns 0 for errors it does not know.
func messageStatus(err error) int {
	switch {
	case errors.Is(err, ErrBadMessage), errors.Is(err, ErrUnknownFault):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownPeer), errors.Is(err, ErrUnknownMessage):
		return http.StatusNotFound
	case errors.Is(err, ErrNoLinkedDevices), errors.Is(err, ErrDuplicateID):
		return http.StatusConflict
	}
	return 0
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
