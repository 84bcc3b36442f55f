"""Pure encoding of the original protocol (no Bottle, no requests): base64 in JSON, a streaming
JSON parser, file types, ids, and body building shared by our client and our server."""
