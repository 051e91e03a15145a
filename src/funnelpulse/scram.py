"""SCRAM-SHA-256 password authentication (RFC 5802 / 7677), the server's side, as Postgres
clients speak it: the password itself never crosses the wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from .errors import FunnelPulseError

ITERATIONS = 4096


def _hmac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, hashlib.sha256).digest()


@dataclass
class Scram:
    """One authentication exchange against the password the server holds."""

    password: str
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    nonce: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(18)).decode())
    first_bare: str = ""
    server_first: str = ""

    def start(self, client_first: str) -> str:
        parts = client_first.split(",", 2)
        if len(parts) < 3 or parts[0] not in ("n", "y"):
            raise FunnelPulseError("Malformed SCRAM message")
        self.first_bare = parts[2]
        client_nonce = dict(p.split("=", 1) for p in self.first_bare.split(",") if "=" in p)["r"]
        self.nonce = client_nonce + self.nonce
        salt = base64.b64encode(self.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={ITERATIONS}"
        return self.server_first

    def finish(self, client_final: str) -> str | None:
        """The server's final message, or None when the proof is wrong."""
        without_proof, _, proof_part = client_final.rpartition(",p=")
        fields = dict(p.split("=", 1) for p in without_proof.split(",") if "=" in p)
        if fields.get("r") != self.nonce or not proof_part:
            return None
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), self.salt, ITERATIONS)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = _hmac(stored_key, message)
        try:
            proof = base64.b64decode(proof_part)
        except ValueError:
            return None
        if len(proof) != len(signature):
            return None
        candidate = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(candidate).digest(), stored_key):
            return None
        server_key = _hmac(salted, b"Server Key")
        return "v=" + base64.b64encode(_hmac(server_key, message)).decode()
