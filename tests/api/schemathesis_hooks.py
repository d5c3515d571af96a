"""schemathesis hooks for `scripts/api-conformance`.

A client following tre's contract sends a fresh `Idempotency-Key` for each
distinct request; reusing one for a different request is refused (422,
`idempotency_key_reused`), which tre's own tests attack. The fuzzer draws
header values from a small pool, so the same key would reach many different
requests: a valid key is made unique here; an invalid one (empty, too long,
not printable ASCII) is left as drawn, so its refusal is still tested.
Negative cases are left alone too: editing one would make schemathesis
re-check it as positive and send the headers it meant to leave out.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(context, case, **kwargs):
    meta = getattr(case, "meta", None)
    if meta is not None and meta.generation.mode.is_negative:
        return
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        value = headers[name]
        if isinstance(value, str) and VALID_KEY.match(value):
            headers[name] = f"st-{uuid.uuid4()}"
