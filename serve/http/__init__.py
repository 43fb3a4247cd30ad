"""The HTTP side: routes, request bodies, response formats, error statuses."""
