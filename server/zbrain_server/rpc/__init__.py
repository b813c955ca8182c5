"""The gRPC edge: handlers, validation, auth, the protobuf codec and RPC telemetry."""
