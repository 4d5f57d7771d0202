"""TOTP by pyotp: RFC 6238, 30 s steps, 6 digits, SHA-1, as every
authenticator app computes it."""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

ISSUER = "authledger"
DRIFT_STEPS = 1  # a code of the step before or after is accepted too


class Totp:
    def new_secret(self) -> str:
        return pyotp.random_base32(32)  # 160 bits, as RFC 4226 advises

    def uri(self, secret: str, account: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)

    def step_of(self, secret: str, code: str, now: datetime) -> int | None:
        totp = pyotp.TOTP(secret)
        step = totp.timecode(now)
        for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
            if hmac.compare_digest(totp.generate_otp(candidate), code):
                return candidate
        return None
