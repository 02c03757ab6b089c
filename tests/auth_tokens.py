"""Real keys and tokens for the auth tests (joserfc mints them; the attack tokens are forged by hand)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey

ISSUER = "https://idp.test"
AUDIENCE = "shadow-api"
SECRET = "a-long-enough-hmac-secret-for-tests-0123456789"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Keys:
    rsa: RSAKey
    ec: ECKey
    ed: OKPKey
    rsa_rotated: RSAKey  # published only after a "rotation"
    rsa_unpublished: RSAKey  # never published

    def jwks(self, *, rotated: bool = False) -> dict[str, Any]:
        keys = [self.rsa, self.ec, self.ed, *((self.rsa_rotated,) if rotated else ())]
        return KeySet(keys).as_dict(private=False)  # type: ignore[arg-type,return-value]


def make_keys() -> Keys:
    return Keys(rsa=RSAKey.generate_key(2048, parameters={"kid": "rsa1"}),
                ec=ECKey.generate_key("P-256", parameters={"kid": "ec1"}),
                ed=OKPKey.generate_key("Ed25519", parameters={"kid": "ed1"}),
                rsa_rotated=RSAKey.generate_key(2048, parameters={"kid": "rsa2"}),
                rsa_unpublished=RSAKey.generate_key(2048, parameters={"kid": "rsa9"}))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "nbf": now - 1,
                            "exp": now + 300, "plan": "beta", "org": {"name": "acme"}, "groups": ["dev"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: Any, alg: str, **overrides: Any) -> str:
    header = {"alg": alg, "kid": key.kid} if key.kid else {"alg": alg}
    return jwt.encode(header, claims(**overrides), key, algorithms=[alg])


def mint_hs(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode({"alg": "HS256"}, claims(**overrides), OctKey.import_key(secret.encode()), algorithms=["HS256"])


def forge(header: dict[str, Any], payload: dict[str, Any], signing_input_key: bytes | None) -> str:
    """A token built by hand (the attacker's tools): HMAC-SHA256 with `signing_input_key`, or no
    signature at all when it is None (alg none)."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    if signing_input_key is None:
        return head + "."
    return head + "." + b64(hmac.new(signing_input_key, head.encode(), hashlib.sha256).digest())


def tamper(token: str) -> str:
    """Same header and signature, a different payload (sub changed): the signature no longer fits."""
    head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sub"] = "admin"
    return f"{head}.{b64(json.dumps(data).encode())}.{sig}"
