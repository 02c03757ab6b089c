"""Make a private CA and the certificates of the multi-cluster example in ./certs (trustme, installed
by `make venv`): the children's server certificates and the parent's client certificate, all from one
CA, plus a certificate from another CA (`stranger`) to see a peer refused.

    .venv/bin/python docs/examples/multi-cluster/make-certs.py
"""

from pathlib import Path

import trustme

folder = Path(__file__).resolve().parent / "certs"
folder.mkdir(exist_ok=True)
ca, stranger = trustme.CA(), trustme.CA()
ca.cert_pem.write_to_path(str(folder / "ca.pem"))
for name, issuer in (("vm", ca), ("k8s", ca), ("parent", ca), ("stranger", stranger)):
    cert = issuer.issue_cert("127.0.0.1", "localhost", common_name=f"{name}.bridge.example")
    cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
print(f"certificates written to {folder}")
