"""The multi-cluster bridge (Traefik Hub's model): child gateways advertise uplinks on an uplink entry
point over mutual TLS; a parent gateway polls them and serves each uplink as a service.

Plain functions only: the `hub:` section (settings.py), the advertisement document (advertisement.py),
merging the children's advertisements into services (services.py). The adapters are in
addons/multicluster.py. See docs/multi-cluster.md.
"""
