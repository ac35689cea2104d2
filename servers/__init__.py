"""muxlab's servers: readiness backends, the shared event loop, protocols and peers."""
