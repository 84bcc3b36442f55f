"""The API server (extra `api`): the Bottle app, routes, auth, config and the cheroot runner."""
