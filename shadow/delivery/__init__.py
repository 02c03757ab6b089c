"""Progressive delivery on the verdict: the canary controller that steps a weighted service's
traffic and the HTTP verdict service for Argo Rollouts / Flagger. Uses shadow.gateway (config),
shadow.capture and analyzers; never mitmproxy; the commands are in shadow.cli."""
