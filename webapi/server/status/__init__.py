"""The status page: server-rendered HTML (Bottle SimpleTemplate) of sites, queue and calcs."""

from webapi.server.status.routes import register_status_routes
from webapi.server.status.sessions import SessionStore

__all__ = ["SessionStore", "register_status_routes"]
