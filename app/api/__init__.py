"""HTTP routers: thin handlers that parse, authorise, call a service and answer."""
