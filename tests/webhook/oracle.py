"""What the webhook must answer to any request body, judged from the body and the answer alone: a 4xx with a
message, or a 200 AdmissionReview in the request's apiVersion, allowed, for the request's uid, never an internal
error, with a JSON patch that applies to the object as sent (jsonpatch). Shared by the hostile-input tests
(tests/webhook/test_webhook_hostile_input.py, over HTTPS) and the atheris target (fuzz/webhook_review.py, in
process)."""
from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch


def judge(request_body: bytes, status: int, answer_body: bytes) -> list[dict[str, Any]]:
    """Raise AssertionError unless the answer keeps the webhook's contract; the patch of a 200 (empty for a 4xx)."""
    assert status < 500, (status, answer_body[:500])
    answer = json.loads(answer_body)
    if status != 200:
        assert 400 <= status < 500 and isinstance(answer.get("error"), str) and answer["error"], answer_body[:500]
        return []
    review = json.loads(request_body)  # answered 200: the body is an AdmissionReview
    request, response = review["request"], answer["response"]
    assert answer["apiVersion"] == review["apiVersion"] and answer["kind"] == "AdmissionReview", answer
    assert response["allowed"] is True and response["uid"] == request["uid"], response
    assert not any("internal error" in warning for warning in response.get("warnings", [])), response
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch", response
    patch: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    jsonpatch.apply_patch(copy.deepcopy(request["object"]), patch)  # applies to the object as sent, or raises
    return patch
