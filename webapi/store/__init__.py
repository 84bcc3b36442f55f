"""The job store (extra `api`) behind the `JobStore` seam the server calls; YAML files on disk."""
