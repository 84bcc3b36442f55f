"""The wire contract every side shares: calc and file shapes, file names, times, the OpenAPI
document. Pure data and validation: no HTTP library, no file system state."""
