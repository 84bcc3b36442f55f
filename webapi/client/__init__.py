"""The workflow side of WebAPI mode (program A's client): register, upload, wait, fetch results."""
