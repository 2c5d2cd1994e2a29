"""What an S3 server's error answers mean: the code of a ClientError, and the codes that say
"condition not met". One place, so the store and its probe cannot read a refusal differently."""

from __future__ import annotations

from botocore.exceptions import ClientError

__all__ = ["PRECONDITION", "error_code"]

# "412" stands for an answer with no code in its body (a HEAD, or a server that sends none).
PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def error_code(exc: ClientError) -> tuple[str, int]:
    """(the error code, or the HTTP status as text when the answer has none; the HTTP status)."""
    err = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(err.get("Code", "") or status), status
