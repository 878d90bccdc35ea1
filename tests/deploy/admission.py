"""ValidatingAdmissionPolicy, evaluated as kube-apiserver evaluates it, for tests: the policy's own CEL text, run by
cel-python on an AdmissionRequest (tests/kubeapi.py's `admit` hook feeds it real requests).

No kube-apiserver runs here, so this follows the published admissionregistration.k8s.io/v1 contract for the parts
our policies use: matchConstraints.resourceRules (apiGroups, apiVersions, operations, resources), matchConditions
(all must hold, else the policy does not apply), variables (evaluated in order, as `variables.NAME`), validations
(every one must hold; a failing one refuses with its message and reason: Invalid, 422, unless another is given),
and a binding whose validationActions include Deny. Not implemented (a policy using them fails here loudly):
paramKind/paramRef, namespaceSelector/objectSelector, excludeResourceRules, messageExpression, auditAnnotations.
cel-python implements the CEL language, not Kubernetes' CEL libraries (quantity, url, regex extensions): our
policies use only the language (has, in, ==, ternaries, filter on lists).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import celpy

from tests.kubeapi_rules import ApiError

REASON_CODES = {"Invalid": 422, "Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413}
UNSUPPORTED = ("paramKind", "namespaceSelector", "objectSelector", "auditAnnotations")


class Policy:
    def __init__(self, policy: dict, binding: dict) -> None:
        spec = policy["spec"]
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert "Deny" in binding["spec"]["validationActions"]
        for key in UNSUPPORTED:
            assert key not in spec and key not in spec.get("matchConstraints", {}), f"{key} is not implemented here"
        assert "paramRef" not in binding["spec"]
        self.name, self.binding = policy["metadata"]["name"], binding["metadata"]["name"]
        self.rules = spec["matchConstraints"]["resourceRules"]
        env = celpy.Environment()
        compile_ = lambda text: env.program(env.compile(text))  # noqa: E731
        self.conditions = [(c["name"], compile_(c["expression"])) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compile_(v["expression"])) for v in spec.get("variables", [])]
        self.validations = []
        for validation in spec["validations"]:
            assert "messageExpression" not in validation, "messageExpression is not implemented here"
            self.validations.append((compile_(validation["expression"]), validation.get("message", ""),
                                     validation.get("reason", "Invalid")))

    def matches(self, request: dict) -> bool:
        resource = request["resource"]
        plural = resource["resource"] + (f"/{request['subResource']}" if request.get("subResource") else "")
        return any(request["operation"] in rule["operations"] or "*" in rule["operations"]
                   for rule in self.rules
                   if resource["group"] in rule["apiGroups"] and
                   (resource["version"] in rule["apiVersions"] or "*" in rule["apiVersions"]) and
                   (plural in rule["resources"] or "*" in rule["resources"]))

    def denial(self, request: dict) -> tuple[str, str] | None:
        """(message, reason) of the first failing validation; None when admitted or when the policy does not apply."""
        if not self.matches(request):
            return None
        activation: dict[str, Any] = {
            "request": celpy.json_to_cel({k: v for k, v in request.items() if k not in ("object", "oldObject")}),
            "object": celpy.json_to_cel(request.get("object")),
            "oldObject": celpy.json_to_cel(request.get("oldObject")),
        }
        for _, condition in self.conditions:
            if not _true(condition.evaluate(activation)):
                return None
        values: dict[str, Any] = {}
        for name, program in self.variables:
            activation["variables"] = celpy.celtypes.MapType(values)
            values[celpy.celtypes.StringType(name)] = program.evaluate(activation)
        activation["variables"] = celpy.celtypes.MapType(values)
        for program, message, reason in self.validations:
            if not _true(program.evaluate(activation)):
                return message, reason
        return None

    def validator(self) -> Callable[[dict], None]:
        """A FakeKubeAPI.admit hook that refuses as kube-apiserver does."""
        def validate(request: dict) -> None:
            denied = self.denial(request)
            if denied is not None:
                message, reason = denied
                raise ApiError(REASON_CODES[reason], reason,
                               f"{request['resource']['resource']} \"{request['name']}\" is forbidden: "
                               f"ValidatingAdmissionPolicy '{self.name}' with binding '{self.binding}' denied "
                               f"request: {message}")
        return validate


def _true(value: Any) -> bool:
    # A CEL error (celpy returns it as a value) fails closed, as failurePolicy: Fail does.
    return isinstance(value, celpy.celtypes.BoolType) and bool(value)
