"""The gateway's core, without a proxy: the config model and loader, Traefik rules, routing, traffic
shifting and stickiness, the circuit breaker, mirror dispatch and its HTTP/1 client, config watching.
Plain functions and classes; never imports mitmproxy (addons/ adapts flows to these) nor shadow.cli."""
