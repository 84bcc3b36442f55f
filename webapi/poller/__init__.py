"""The poller on the external host (extra `poll`): one loop, two protocol adapters, executors.

Imports only `requests`, PyYAML and the standard library: an external host needs nothing else.
"""
