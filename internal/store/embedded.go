package store

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Embedded is a NATS server with JetStream running inside this process,
// reached through an in-process connection. It opens no TCP listener unless
// Listen is set.
type Embedded struct {
	Server *server.Server
	Conn   *nats.Conn
}

// StartEmbedded starts the server with its JetStream files under
// dataDir/jetstream. listen is "" (no listener) or a host:port for clients
// outside the process.
func StartEmbedded(dataDir, listen string) (*Embedded, error) {
	opts := &server.Options{
		ServerName:         "aloft",
		JetStream:          true,
		StoreDir:           filepath.Join(dataDir, "jetstream"),
		DontListen:         listen == "",
		NoSigs:             true,
		NoLog:              true,
		JetStreamMaxMemory: 256 << 20,
	}
	if listen != "" {
		host, port, err := splitHostPort(listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = host, port
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cannot create nats server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats server did not become ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("aloft"), nats.MaxReconnects(-1))
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("cannot connect to the embedded nats server: %w", err)
	}
	return &Embedded{Server: ns, Conn: nc}, nil
}

// Close drains the connection and shuts the server down.
func (e *Embedded) Close() {
	e.Conn.Drain()
	e.Conn.Close()
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}
