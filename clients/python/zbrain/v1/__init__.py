"""Generated protobuf and gRPC stubs for zbrain.v1 (see scripts/gen_protos.py)."""
