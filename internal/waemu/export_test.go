package waemu

// TakeBundle hands out device jid's prekey bundle as a peer's bundle fetch
// would, consuming a one-time prekey; tests drain a device's keys with it.
func (s *Server) TakeBundle(jid string) error {
	_, err := s.takeBundle(mustJID(jid))
	return err
}

// PendingFor is how many deliveries wait in a device's outbox.
func (s *Server) PendingFor(dev string) int {
	ob := s.msgs.outboxOf(dev)
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return len(ob.items)
}

// PendingMessages is how many (message, device) deliveries of the phones'
// messages still wait for the device's receipt.
func (s *Server) PendingMessages() int {
	m := s.msgs
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, msg := range m.sent {
		for _, d := range msg.devices {
			if d.DeliveredAt == nil {
				n++
			}
		}
	}
	return n
}
