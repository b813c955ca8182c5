"""The ZBrain server: an asyncio gRPC service over a pluggable job store."""
