"""Kubernetes Gateway API manifests as the gateway's configuration (docs/gateway-api.md).

`manifests` reads and checks the YAML documents, `resolve` decides what a controller decides
(attachment, references, status, precedence), `translate` builds shadow's configuration model from
them, and `provider` is the entry point the gateway and the CLI call. Pure: no mitmproxy, no network.
"""
