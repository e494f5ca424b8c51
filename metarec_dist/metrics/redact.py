"""Keep secrets out of logs, W&B configs and checkpoints.

Three rules, applied recursively to any config-like object: a key that names a secret (token, key,
secret, password, credential) has its value replaced; credentials embedded in a URL
(``s3://KEY:SECRET@bucket``) are removed; and any string containing the value of a secret environment
variable (W&B key, Ray token, cloud credentials) is masked wherever it appears.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|private[_-]?key)", re.I)
SECRET_ENV = (
    "WANDB_API_KEY",
    "RAY_AUTH_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_KEY",
    "HF_TOKEN",
)
# `scheme://user:pass@host`, also as `scheme:/user:pass@host`: what a URL becomes once it has been through
# `pathlib.Path` (which collapses the double slash) on its way into an error message.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]+:/{1,2})[^/@\s]+@")


def _secret_values() -> list[str]:
    return [v for k in SECRET_ENV if len(v := os.environ.get(k, "")) >= 6]


def redact_text(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    for value in _secret_values():
        text = text.replace(value, MASK)
    return text


def redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: MASK if isinstance(k, str) and SECRET_KEY.search(k) and v else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj)
    return obj
