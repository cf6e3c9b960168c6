"""stcloud.webhooks.verify: pure Standard Webhooks verification."""
from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from stcloud.webhooks import verify

# The Standard Webhooks specification's test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def spec_headers(**over):
    h = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS), "webhook-signature": SPEC_SIG}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def test_spec_vector_with_frozen_clock():
    assert verify.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG
    signed = verify.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TS)
    assert signed.webhook_id == SPEC_ID and signed.timestamp == SPEC_TS
    # still inside the window 300 s either way, outside at 301
    verify.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TS + 300)
    verify.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TS - 300)
    with pytest.raises(verify.VerificationError) as old:
        verify.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TS + 301)
    assert old.value.code == "timestamp_too_old"
    with pytest.raises(verify.VerificationError) as future:
        verify.verify(SPEC_SECRET, spec_headers(), SPEC_BODY, now=SPEC_TS - 301)
    assert future.value.code == "timestamp_in_future"


def test_independent_signer_agrees():
    ts = datetime.fromtimestamp(SPEC_TS, tz=UTC)
    assert Webhook(SPEC_SECRET).sign(SPEC_ID, ts, SPEC_BODY.decode()) == SPEC_SIG


def test_several_signatures_any_match_wins():
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    for header in (f"{other} {SPEC_SIG}", f"{SPEC_SIG} {other}", f"v1a,abcd {SPEC_SIG}",
                   f"  {SPEC_SIG}   v2,zzz "):
        verify.verify(SPEC_SECRET, spec_headers(**{"webhook-signature": header}), SPEC_BODY, now=SPEC_TS)


def test_any_of_several_secrets():
    verify.verify(["whsec_" + base64.b64encode(b"k" * 24).decode(), SPEC_SECRET], spec_headers(),
                  SPEC_BODY, now=SPEC_TS)


def test_case_insensitive_header_names_in_plain_dicts():
    h = {"Webhook-Id": SPEC_ID, "WEBHOOK-TIMESTAMP": str(SPEC_TS), "Webhook-Signature": SPEC_SIG}
    verify.verify(SPEC_SECRET, h, SPEC_BODY, now=SPEC_TS)


@pytest.mark.parametrize("headers,body,code", [
    (spec_headers(**{"webhook-id": None}), SPEC_BODY, "missing_header"),
    (spec_headers(**{"webhook-timestamp": None}), SPEC_BODY, "missing_header"),
    (spec_headers(**{"webhook-signature": None}), SPEC_BODY, "missing_header"),
    (spec_headers(**{"webhook-signature": "   "}), SPEC_BODY, "missing_header"),
    (spec_headers(), b'{"test": 2432232315}', "no_matching_signature"),  # one byte altered
    (spec_headers(), SPEC_BODY + b" ", "no_matching_signature"),
    (spec_headers(**{"webhook-id": SPEC_ID + "x"}), SPEC_BODY, "no_matching_signature"),
    (spec_headers(**{"webhook-signature": "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}), SPEC_BODY,
     "malformed_header"),  # no comma
    (spec_headers(**{"webhook-signature": "v1,"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-signature": ",abc"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-signature": "v1,not base64!!"}), SPEC_BODY, "no_matching_signature"),
    (spec_headers(**{"webhook-signature": "v2," + SPEC_SIG[3:]}), SPEC_BODY, "no_matching_signature"),
    (spec_headers(**{"webhook-signature": " ".join([SPEC_SIG] * 17)}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-timestamp": "+1614265330"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-timestamp": "1614265330.5"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-timestamp": "1_614_265_330"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-timestamp": "1e9"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-timestamp": "9" * 40}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-id": "a b"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-id": "é"}), SPEC_BODY, "malformed_header"),
    (spec_headers(**{"webhook-id": "m" * 201}), SPEC_BODY, "malformed_header"),
])
def test_refusals_are_verification_errors(headers, body, code):
    with pytest.raises(verify.VerificationError) as err:
        verify.verify(SPEC_SECRET, headers, body, now=SPEC_TS)
    assert err.value.code == code
    assert err.value.message


def test_wrong_secret():
    with pytest.raises(verify.VerificationError):
        verify.verify("whsec_" + base64.b64encode(b"another key 32 bytes long......").decode(),
                      spec_headers(), SPEC_BODY, now=SPEC_TS)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_***", "whsec_abc"])
def test_malformed_secret_is_a_secret_error(secret):
    with pytest.raises(verify.SecretError):
        verify.verify(secret, spec_headers(), SPEC_BODY, now=SPEC_TS)
