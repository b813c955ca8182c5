"""The HTTP edge: the zbrain.v1 API as JSON (routes from the protos'
google.api.http annotations), its streams over WebSocket, browser sessions,
and the web console's files. docs/http.md describes it for its users."""
